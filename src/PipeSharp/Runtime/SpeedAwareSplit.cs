namespace PipeSharp.Runtime;

/// <summary>
/// The split that automatic rebalancing moves to: consecutive layers per stage that minimise the slowest stage's
/// predicted time, a stage's time being its layers' costs times the measured seconds per unit of cost of the rank that
/// holds it: <see cref="Partitioning.StagePartitioner"/> with each rank's speed the inverse of its seconds per unit of
/// cost, so a rank holding several stages (interleaved, V) is charged for all of them.
/// </summary>
internal static class SpeedAwareSplit
{
    /// <summary>
    /// Layers per stage for <paramref name="costs"/> (one per layer, non-negative) when stage s runs on rank
    /// <paramref name="stageToRank"/>[s] at <paramref name="secondsPerCost"/>[rank]: the exact minimum of the slowest
    /// rank (ties: earlier stages get fewer layers), every stage at least one layer.
    /// </summary>
    internal static IReadOnlyList<int> RebalancedSplit(IReadOnlyList<double> costs, IReadOnlyList<int> stageToRank, IReadOnlyList<double> secondsPerCost)
    {
        double slowest = secondsPerCost.Where(t => t > 0 && double.IsFinite(t)).DefaultIfEmpty(1).Max();
        var problem = new Partitioning.PartitionProblem
        {
            LayerSeconds = costs.Select(c => Math.Max(0, c)).ToArray(),
            StageToRank = stageToRank,
            // Speeds relative to the slowest rank; a rank not measured (0 s) is taken as fast as the slowest, never faster.
            DeviceSpeeds = secondsPerCost.Select(t => t > 0 && double.IsFinite(t) ? slowest / t : 1).ToArray(),
        };
        return Partitioning.StagePartitioner.Solve(problem).Balance;
    }

    /// <summary>The predicted busy time of each rank: its stages' layer costs times its seconds per unit of cost.</summary>
    internal static double[] RankTimes(IReadOnlyList<double> costs, IReadOnlyList<int> balance, IReadOnlyList<int> stageToRank, IReadOnlyList<double> secondsPerCost)
    {
        var times = new double[secondsPerCost.Count];
        for (int s = 0, layer = 0; s < balance.Count; s++)
            for (int k = 0; k < balance[s]; k++) times[stageToRank[s]] += secondsPerCost[stageToRank[s]] * Math.Max(0, costs[layer++]);
        return times;
    }
}

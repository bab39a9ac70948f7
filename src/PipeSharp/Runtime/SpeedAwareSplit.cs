namespace PipeSharp.Runtime;

/// <summary>
/// The split that automatic rebalancing moves to: consecutive layers per stage that minimise the slowest stage's
/// predicted time, a stage's time being its layers' costs times the measured seconds per unit of cost of the rank that
/// holds it. One function, so a constrained partitioner with per-rank speed factors can take its place.
/// </summary>
internal static class SpeedAwareSplit
{
    /// <summary>
    /// Layers per stage for <paramref name="costs"/> (one per layer, non-negative) when stage s runs on rank
    /// <paramref name="stageToRank"/>[s] at <paramref name="secondsPerCost"/>[rank]: the exact minimum of the slowest
    /// stage by dynamic programming (ties: earlier stages get fewer layers), every stage at least one layer.
    /// </summary>
    internal static IReadOnlyList<int> RebalancedSplit(IReadOnlyList<double> costs, IReadOnlyList<int> stageToRank, IReadOnlyList<double> secondsPerCost)
    {
        Partitioning.Balance.CheckStageCount(stageToRank.Count, costs.Count);
        return Partitioning.Balance.MinimiseSlowest(costs, stageToRank.Select(rank => secondsPerCost[rank]).ToArray());
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

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
        int n = costs.Count, stages = stageToRank.Count;
        Partitioning.Balance.CheckStageCount(stages, n);
        var prefix = new double[n + 1];
        for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + Math.Max(0, costs[i]);
        double Time(int stage, int from, int to) => secondsPerCost[stageToRank[stage]] * (prefix[to] - prefix[from]);

        // best[k, j]: the smallest possible slowest stage when the first j layers form stages 0..k-1.
        var best = new double[stages + 1, n + 1];
        var cut = new int[stages + 1, n + 1];
        for (int j = 0; j <= n; j++) best[1, j] = j >= 1 ? Time(0, 0, j) : double.PositiveInfinity;
        for (int k = 2; k <= stages; k++)
            for (int j = 0; j <= n; j++)
            {
                best[k, j] = double.PositiveInfinity;
                for (int i = k - 1; i < j; i++)
                {
                    double candidate = Math.Max(best[k - 1, i], Time(k - 1, i, j));
                    if (candidate < best[k, j] - 1e-12 * Math.Max(1, candidate))
                    {
                        best[k, j] = candidate;
                        cut[k, j] = i;
                    }
                }
            }
        var counts = new int[stages];
        int end = n;
        for (int k = stages; k >= 2; k--)
        {
            int start = cut[k, end];
            counts[k - 1] = end - start;
            end = start;
        }
        counts[0] = end;
        return counts;
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

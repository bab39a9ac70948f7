using PipeSharp.Partitioning;

namespace PipeSharp.Tests.Partitioning;

/// <summary>
/// The partitioner's cost model written out plainly, and every split of a small problem tried: what the dynamic
/// programme must equal.
/// </summary>
internal static class BruteForceSplit
{
    /// <summary>Every way to cut <paramref name="layers"/> layers into <paramref name="stages"/> non-empty runs.</summary>
    public static IEnumerable<int[]> All(int layers, int stages)
    {
        if (stages == 1) { yield return [layers]; yield break; }
        for (int first = 1; first <= layers - stages + 1; first++)
            foreach (var rest in All(layers - first, stages - 1))
                yield return [first, .. rest];
    }

    /// <summary>Each rank's seconds and bytes for <paramref name="balance"/>, straight from the definitions.</summary>
    public static (double[] Seconds, long[] Bytes) Evaluate(PartitionProblem p, IReadOnlyList<int> balance)
    {
        int ranks = p.StageToRank.Max() + 1;
        var seconds = new double[ranks];
        var bytes = new long[ranks];
        int first = 0;
        for (int s = 0; s < balance.Count; s++)
        {
            int r = p.StageToRank[s];
            double speed = p.DeviceSpeeds?[r] ?? 1;
            int end = first + balance[s];
            for (int i = first; i < end; i++)
            {
                seconds[r] += p.LayerSeconds[i] / speed;
                bytes[r] += (p.LayerStateBytes?[i] ?? 0) + (p.StagePeakMicroBatches?[s] ?? 1) * (p.LayerActivationBytes?[i] ?? 0);
            }
            // Each side of a cut between two ranks receives one message: the activation forward, the gradient back.
            if (s > 0 && p.StageToRank[s - 1] != r && p.TransferSeconds is { } t1)
                seconds[r] += t1(p.StageToRank[s - 1], r, p.LayerOutputBytes?[first - 1] ?? 0);
            if (s < balance.Count - 1 && p.StageToRank[s + 1] != r && p.TransferSeconds is { } t2)
                seconds[r] += t2(p.StageToRank[s + 1], r, p.LayerOutputBytes?[end - 1] ?? 0);
            first = end;
        }
        return (seconds, bytes);
    }

    public static long Budget(PartitionProblem p, int rank) =>
        p.MemoryPerDevice is null ? long.MaxValue : p.MemoryPerDevice.Count == 1 ? p.MemoryPerDevice[0] : p.MemoryPerDevice[rank];

    /// <summary>The smallest bottleneck of a split that fits the budgets (null: none fits).</summary>
    public static double? Best(PartitionProblem p)
    {
        double? best = null;
        foreach (var balance in All(p.LayerSeconds.Count, p.StageToRank.Count))
        {
            var (seconds, bytes) = Evaluate(p, balance);
            if (bytes.Select((b, r) => b <= Budget(p, r)).All(x => x) && (best is null || seconds.Max() < best)) best = seconds.Max();
        }
        return best;
    }

    /// <summary>Over the splits that fit with a bottleneck of at most <paramref name="bound"/>: the least largest rank total of <paramref name="preference"/>.</summary>
    public static double BestWithin(PartitionProblem p, double bound, double[] preference) =>
        All(p.LayerSeconds.Count, p.StageToRank.Count).Where(balance =>
        {
            var (seconds, bytes) = Evaluate(p, balance);
            return seconds.Max() <= bound + 1e-9 && bytes.Select((b, r) => b <= Budget(p, r)).All(x => x);
        }).Min(balance =>
        {
            var totals = new double[p.StageToRank.Max() + 1];
            int first = 0;
            for (int s = 0; s < balance.Length; first += balance[s], s++) totals[p.StageToRank[s]] += preference.Skip(first).Take(balance[s]).Sum();
            return totals.Max();
        });

    /// <summary>The least, over all splits, of the largest share of a budget any rank needs.</summary>
    public static double LeastBudgetShare(PartitionProblem p) =>
        All(p.LayerSeconds.Count, p.StageToRank.Count).Min(balance =>
        {
            var bytes = Evaluate(p, balance).Bytes;
            return bytes.Select((b, r) => b / (double)Budget(p, r)).Max();
        });
}

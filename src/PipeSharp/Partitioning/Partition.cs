namespace PipeSharp.Partitioning;

/// <summary>
/// A split of a model into stages with what the cost model predicts for it (<see cref="StagePartitioner"/>): the layers
/// of each stage, and each rank's time per micro-batch and memory.
/// </summary>
/// <param name="Balance">Layers per stage, in model order (what <c>PipelineOptions.Balance</c> takes).</param>
/// <param name="StageToRank">The rank of each stage, as in the problem.</param>
/// <param name="RankSeconds">
/// Each rank's predicted seconds per micro-batch: its stages' layer seconds over its speed, plus the messages it
/// receives over cuts to other ranks.
/// </param>
/// <param name="RankBytes">Each rank's predicted memory: its layers' state plus each stage's activations at its peak.</param>
public sealed record Partition(
    IReadOnlyList<int> Balance,
    IReadOnlyList<int> StageToRank,
    IReadOnlyList<double> RankSeconds,
    IReadOnlyList<long> RankBytes)
{
    /// <summary>The slowest rank's seconds per micro-batch: what the partitioner minimises.</summary>
    public double BottleneckSeconds => RankSeconds.Max();

    /// <summary>The rank with the most seconds (the first, on a tie).</summary>
    public int BottleneckRank => RankSeconds.Select((t, r) => (t, r)).MaxBy(x => x.t).r;

    /// <summary>One line: the balance and every rank's time and memory.</summary>
    public override string ToString() =>
        $"balance {string.Join(",", Balance)}: " + string.Join("; ", RankSeconds.Select((t, r) =>
            FormattableString.Invariant($"rank {r} {t * 1e3:0.###} ms/micro-batch, {RankBytes[r] / 1e6:0.#} MB")));
}

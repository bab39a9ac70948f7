namespace PipeSharp.Memory;

/// <summary>
/// The memory a pipeline is predicted to need before it trains: the peak of each rank, from the measured and counted
/// inputs of every stage and the schedule's action lists.
/// </summary>
/// <param name="Ranks">Each pipeline rank's peak (every replica's ranks alike).</param>
/// <param name="OptimizerStateSource">How the optimizer state was found (e.g. "AdamW: 2 x parameters, from the optimizer type").</param>
public sealed record MemoryPrediction(IReadOnlyList<RankMemoryPrediction> Ranks, string OptimizerStateSource)
{
    /// <summary>The largest peak of any rank.</summary>
    public long LargestRankBytes => Ranks.Max(r => r.TotalBytes);

    /// <summary>The sum of the ranks' peaks (one replica): what ranks that share one process's memory need together.</summary>
    public long TotalBytes => Ranks.Sum(r => r.TotalBytes);

    /// <summary>
    /// What the ranks need together when they share one process's memory (one replica): every rank's held peak plus
    /// the largest moment's extra of any one rank, since the ranks' actions do not peak at the same instant. At most
    /// <see cref="TotalBytes"/>.
    /// </summary>
    public long SharedProcessBytes => Ranks.Sum(r => r.HeldBytes) + Ranks.Max(r => r.TotalBytes - r.HeldBytes);

    /// <summary>One line per rank.</summary>
    public override string ToString() => string.Join(Environment.NewLine, Ranks.Select(r => r.ToString()));
}

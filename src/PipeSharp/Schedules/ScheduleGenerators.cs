using PipeSharp.Schedules.Generators;

namespace PipeSharp.Schedules;

/// <summary>
/// The schedules PipeSharp can make, by name. Every generator is a small pure function of (ranks, micro-batches,
/// stages per rank); see the classes in <see cref="Generators"/>.
/// </summary>
public static class ScheduleGenerators
{
    /// <summary>The names <see cref="Create"/> accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = ["gpipe", "1f1b", "interleaved", "zb-h1", "zb-v"];

    /// <summary>
    /// The number of stages each rank holds under schedule <paramref name="name"/> when the user asked for
    /// <paramref name="requested"/> (null: the schedule's default): 1 for GPipe, 1F1B and ZB-H1, 2 for ZB-V,
    /// and the request (default 2) for interleaved.
    /// </summary>
    /// <exception cref="ArgumentException">The schedule does not support that many stages per rank.</exception>
    public static int StagesPerRank(string name, int? requested)
    {
        int perRank = Normalise(name) switch
        {
            "interleaved" => requested ?? 2,
            "zb-v" => 2,
            _ => 1,
        };
        if (requested is { } v && v != perRank)
            throw new ArgumentException(
                $"schedule '{name}' runs {perRank} stage(s) per rank, not {v}: leave the stages per rank unset, or use 'interleaved' for any number.",
                "stagesPerRank");
        if (perRank < 1)
            throw new ArgumentOutOfRangeException("stagesPerRank", perRank, "The number of stages per rank must be at least 1.");
        return perRank;
    }

    /// <summary>Old name of <see cref="StagesPerRank"/>.</summary>
    [Obsolete("use StagesPerRank; ChunksPerRank will be removed in the next release.")]
    public static int ChunksPerRank(string name, int? requestedChunks) => StagesPerRank(name, requestedChunks);

    /// <summary>Makes the schedule called <paramref name="name"/> (see <see cref="Names"/>).</summary>
    /// <param name="name">The schedule's name.</param>
    /// <param name="ranks">Number of ranks (devices / workers).</param>
    /// <param name="microBatches">Micro-batches per step.</param>
    /// <param name="chunks">Stages per rank (interleaved only; null for the schedule's default).</param>
    /// <param name="costs">Action costs the zero-bubble generators place actions by (default: F = I = W).</param>
    /// <exception cref="ArgumentException">Unknown name, or a condition of the schedule is not met.</exception>
    public static Schedule Create(string name, int ranks, int microBatches, int? chunks = null, ActionCosts? costs = null)
    {
        int v = StagesPerRank(name, chunks);
        return Normalise(name) switch
        {
            "gpipe" => Generators.GPipe.Create(ranks, microBatches),
            "1f1b" => Generators.OneForwardOneBackward.Create(ranks, microBatches),
            "interleaved" => InterleavedOneForwardOneBackward.Create(ranks, microBatches, v),
            "zb-h1" => ZeroBubble.H1(ranks, microBatches, costs),
            "zb-v" => ZeroBubble.V(ranks, microBatches, costs),
            _ => throw new ArgumentException(
                $"Unknown schedule '{name}'. Use one of: {string.Join(", ", Names)}, or the path of a schedule file.", nameof(name)),
        };
    }

    /// <summary>GPipe with one stage per rank.</summary>
    public static Schedule GPipe(int stages, int microBatches) => Generators.GPipe.Create(stages, microBatches);

    /// <summary>1F1B with one stage per rank.</summary>
    public static Schedule OneForwardOneBackward(int stages, int microBatches) => Generators.OneForwardOneBackward.Create(stages, microBatches);

    /// <summary>Forwards only (evaluation, inference), for any placement.</summary>
    public static Schedule ForwardOnly(int stages, int microBatches, IReadOnlyList<int>? stageToRank = null) =>
        Generators.ForwardOnly.Create(stages, microBatches, stageToRank);

    private static string Normalise(string name) => name.Trim().ToLowerInvariant() switch
    {
        "interleaved-1f1b" or "interleaved1f1b" => "interleaved",
        "zbh1" => "zb-h1",
        "zbv" => "zb-v",
        var n => n,
    };
}

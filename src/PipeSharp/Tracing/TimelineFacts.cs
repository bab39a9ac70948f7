using PipeSharp.Schedules;

namespace PipeSharp.Tracing;

/// <summary>What the timeline renderers need to know about a timeline: its checks, its length and its chunks.</summary>
internal static class TimelineFacts
{
    /// <summary>Refuses a missing timeline, a rank count below one and actions on ranks outside it.</summary>
    public static void Check(IReadOnlyList<ActionTiming> timeline, int rankCount)
    {
        ArgumentNullException.ThrowIfNull(timeline);
        if (rankCount < 1)
            throw new ArgumentOutOfRangeException(nameof(rankCount), rankCount, "A timeline needs at least one rank.");
        foreach (var t in timeline)
        {
            if (t.Rank < 0 || t.Rank >= rankCount)
                throw new ArgumentException(
                    $"Action {t.Action} runs on rank {t.Rank}, but the timeline has ranks 0 to {rankCount - 1}: pass the pipeline's rank count.",
                    nameof(timeline));
        }
    }

    /// <summary>When the last action ends, in seconds; 0 for an empty timeline.</summary>
    public static double Makespan(IReadOnlyList<ActionTiming> timeline) =>
        timeline.Count == 0 ? 0 : Math.Max(0, timeline.Max(t => t.End));

    /// <summary>
    /// Which chunk of its rank a stage is: 0 for stages 0 to <paramref name="rankCount"/> - 1, 1 for the next
    /// <paramref name="rankCount"/> stages and so on. Holds for interleaved (looping) and V-shaped placements alike.
    /// </summary>
    public static int Chunk(int stage, int rankCount) => Math.Max(0, stage) / rankCount;

    /// <summary>How many chunks the timeline uses: 1 when every rank holds a single stage.</summary>
    public static int ChunkCount(IReadOnlyList<ActionTiming> timeline, int rankCount) =>
        timeline.Count == 0 ? 1 : timeline.Max(t => Chunk(t.Action.Stage, rankCount)) + 1;

    /// <summary>The ranks that run actions of more than one stage.</summary>
    public static HashSet<int> RanksWithSeveralStages(IReadOnlyList<ActionTiming> timeline) =>
        timeline.GroupBy(t => t.Rank)
            .Where(g => g.Select(t => t.Action.Stage).Distinct().Skip(1).Any())
            .Select(g => g.Key)
            .ToHashSet();
}

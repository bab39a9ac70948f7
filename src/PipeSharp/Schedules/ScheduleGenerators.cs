namespace PipeSharp.Schedules;

/// <summary>
/// Pure functions that make schedules, one stage per rank (stage s on rank s). Each works for any number of
/// stages and micro-batches, including fewer micro-batches than stages.
/// </summary>
public static class ScheduleGenerators
{
    /// <summary>The names <see cref="Create"/> accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = ["gpipe", "1f1b"];

    /// <summary>Makes the schedule called <paramref name="name"/> (see <see cref="Names"/>).</summary>
    /// <exception cref="ArgumentException">Unknown name.</exception>
    public static Schedule Create(string name, int stages, int microBatches) => name.ToLowerInvariant() switch
    {
        "gpipe" => GPipe(stages, microBatches),
        "1f1b" => OneForwardOneBackward(stages, microBatches),
        _ => throw new ArgumentException(
            $"Unknown schedule '{name}'. Use one of: {string.Join(", ", Names)}.", nameof(name)),
    };

    /// <summary>
    /// GPipe: every stage runs the forwards of all micro-batches, then their backwards in reverse order.
    /// Holds the activations of all m micro-batches at once.
    /// </summary>
    public static Schedule GPipe(int stages, int microBatches)
    {
        CheckCounts(stages, microBatches);
        var ranks = new List<IReadOnlyList<PipelineAction>>();
        for (int s = 0; s < stages; s++)
        {
            var list = new List<PipelineAction>(2 * microBatches);
            for (int i = 0; i < microBatches; i++) list.Add(PipelineAction.F(s, i));
            for (int i = microBatches - 1; i >= 0; i--) list.Add(PipelineAction.B(s, i));
            ranks.Add(list);
        }
        return new Schedule("gpipe", stages, microBatches, Identity(stages), ranks);
    }

    /// <summary>
    /// 1F1B (PipeDream-Flush): stage s runs min(p - s - 1, m) warm-up forwards, then alternates one forward
    /// and one backward, then drains the remaining backwards. Same bubble as GPipe, but stage s holds at most
    /// p - s micro-batches of activations instead of m.
    /// </summary>
    public static Schedule OneForwardOneBackward(int stages, int microBatches)
    {
        CheckCounts(stages, microBatches);
        var ranks = new List<IReadOnlyList<PipelineAction>>();
        for (int s = 0; s < stages; s++)
        {
            int warmup = Math.Min(stages - s - 1, microBatches);
            var list = new List<PipelineAction>(2 * microBatches);
            int f = 0, b = 0;
            for (; f < warmup; f++) list.Add(PipelineAction.F(s, f));
            while (f < microBatches)
            {
                list.Add(PipelineAction.F(s, f++));
                list.Add(PipelineAction.B(s, b++));
            }
            while (b < microBatches) list.Add(PipelineAction.B(s, b++));
            ranks.Add(list);
        }
        return new Schedule("1f1b", stages, microBatches, Identity(stages), ranks);
    }

    /// <summary>Forwards only, in micro-batch order: for evaluation and inference.</summary>
    public static Schedule ForwardOnly(int stages, int microBatches)
    {
        CheckCounts(stages, microBatches);
        var ranks = new List<IReadOnlyList<PipelineAction>>();
        for (int s = 0; s < stages; s++)
            ranks.Add(Enumerable.Range(0, microBatches).Select(i => PipelineAction.F(s, i)).ToList());
        return new Schedule("forward", stages, microBatches, Identity(stages), ranks);
    }

    private static int[] Identity(int n) => Enumerable.Range(0, n).ToArray();

    private static void CheckCounts(int stages, int microBatches)
    {
        if (stages < 1)
            throw new ArgumentOutOfRangeException(nameof(stages), stages, "The number of stages must be at least 1.");
        if (microBatches < 1)
            throw new ArgumentOutOfRangeException(nameof(microBatches), microBatches, "The number of micro-batches must be at least 1.");
    }
}

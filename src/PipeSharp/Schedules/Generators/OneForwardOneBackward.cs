namespace PipeSharp.Schedules.Generators;

/// <summary>1F1B (PipeDream-Flush): warm-up forwards, then one forward and one backward in turn, then the last backwards.</summary>
internal static class OneForwardOneBackward
{
    /// <summary>
    /// Stage s runs min(p - s - 1, m) warm-up forwards, then alternates one forward and one backward, then drains the
    /// remaining backwards. Same bubble as GPipe, but stage s holds at most p - s micro-batches of activations.
    /// </summary>
    public static Schedule Create(int stages, int microBatches)
    {
        Checks.Counts(stages, microBatches);
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
        return new Schedule("1f1b", stages, microBatches, Placement.OnePerRank(stages), ranks);
    }
}

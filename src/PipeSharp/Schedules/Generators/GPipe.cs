namespace PipeSharp.Schedules.Generators;

/// <summary>GPipe: every stage runs the forwards of all micro-batches, then their backwards in reverse order.</summary>
internal static class GPipe
{
    /// <summary>Makes the schedule. Holds the activations of all m micro-batches at once.</summary>
    public static Schedule Create(int stages, int microBatches)
    {
        Checks.Counts(stages, microBatches);
        var ranks = new List<IReadOnlyList<PipelineAction>>();
        for (int s = 0; s < stages; s++)
        {
            var list = new List<PipelineAction>(2 * microBatches);
            for (int i = 0; i < microBatches; i++) list.Add(PipelineAction.F(s, i));
            for (int i = microBatches - 1; i >= 0; i--) list.Add(PipelineAction.B(s, i));
            ranks.Add(list);
        }
        return new Schedule("gpipe", stages, microBatches, Placement.OnePerRank(stages), ranks);
    }
}

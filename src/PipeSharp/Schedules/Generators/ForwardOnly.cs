namespace PipeSharp.Schedules.Generators;

/// <summary>Forwards only, for evaluation and inference.</summary>
internal static class ForwardOnly
{
    /// <summary>
    /// Every rank runs the forwards of its stages in the order they can start with unit costs (stage + micro-batch),
    /// so a rank with several stages never waits on a late stage while an early one has work.
    /// </summary>
    public static Schedule Create(int stages, int microBatches, IReadOnlyList<int>? stageToRank = null)
    {
        Checks.Counts(stages, microBatches);
        var placement = stageToRank ?? Placement.OnePerRank(stages);
        int rankCount = placement.Max() + 1;
        var ranks = Enumerable.Range(0, rankCount).Select(_ => new List<PipelineAction>()).ToList();
        var order = from i in Enumerable.Range(0, microBatches)
                    from s in Enumerable.Range(0, stages)
                    orderby i + s, s
                    select PipelineAction.F(s, i);
        foreach (var a in order) ranks[placement[a.Stage]].Add(a);
        return new Schedule("forward", stages, microBatches, placement, ranks.Cast<IReadOnlyList<PipelineAction>>().ToList());
    }
}

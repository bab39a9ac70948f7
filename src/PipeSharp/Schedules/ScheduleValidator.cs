using System.Text;

namespace PipeSharp.Schedules;

/// <summary>Thrown when a schedule is not runnable; the message shows the schedule grid and the offending action.</summary>
public sealed class InvalidScheduleException(string message) : Exception(message);

/// <summary>
/// Checks a schedule before it runs: the placement is consistent, every (stage, micro-batch) has exactly one
/// forward (and, unless the schedule is forward-only, exactly one backward), each action sits on the rank that
/// holds its stage, and a symbolic run of all ranks, receiving by key as the runtime does, finishes
/// (so dependencies hold and nothing deadlocks).
/// </summary>
public static class ScheduleValidator
{
    /// <summary>Throws <see cref="InvalidScheduleException"/> if <paramref name="schedule"/> cannot run.</summary>
    public static void Validate(Schedule schedule)
    {
        int p = schedule.StageCount, m = schedule.MicroBatchCount;
        if (p < 1 || m < 1) Fail(schedule, $"stage count {p} and micro-batch count {m} must both be at least 1.");
        if (schedule.StageToRank.Count != p)
            Fail(schedule, $"the placement names {schedule.StageToRank.Count} stages but the schedule has {p}.");
        for (int s = 0; s < p; s++)
        {
            int r = schedule.StageToRank[s];
            if (r < 0 || r >= schedule.RankCount)
                Fail(schedule, $"stage {s} is placed on rank {r}, but there are ranks 0..{schedule.RankCount - 1}.");
        }

        bool forwardOnly = schedule.IsForwardOnly;
        var seen = new HashSet<PipelineAction>();
        for (int r = 0; r < schedule.RankCount; r++)
        {
            foreach (var a in schedule.RankActions[r])
            {
                if (a.Stage < 0 || a.Stage >= p || a.MicroBatch < 0 || a.MicroBatch >= m)
                    Fail(schedule, $"action {a} on rank {r} is out of range (stages 0..{p - 1}, micro-batches 0..{m - 1}).", a);
                if (schedule.StageToRank[a.Stage] != r)
                    Fail(schedule, $"action {a} is on rank {r}, but stage {a.Stage} is placed on rank {schedule.StageToRank[a.Stage]}.", a);
                if (!seen.Add(a)) Fail(schedule, $"action {a} appears more than once.", a);
            }
        }
        for (int s = 0; s < p; s++)
        {
            for (int i = 0; i < m; i++)
            {
                if (!seen.Contains(PipelineAction.F(s, i)))
                    Fail(schedule, $"forward {PipelineAction.F(s, i)} is missing.");
                if (!forwardOnly && !seen.Contains(PipelineAction.B(s, i)))
                    Fail(schedule, $"backward {PipelineAction.B(s, i)} is missing.");
            }
        }
        SimulateToCompletion(schedule);
    }

    /// <summary>
    /// The prerequisites of an action: the actions whose results it receives or reuses. A forward needs the
    /// previous stage's forward; a backward needs its own forward and the next stage's backward.
    /// </summary>
    public static IEnumerable<PipelineAction> Dependencies(PipelineAction a, int stageCount)
    {
        switch (a.Kind)
        {
            case ActionKind.Forward:
                if (a.Stage > 0) yield return PipelineAction.F(a.Stage - 1, a.MicroBatch);
                break;
            case ActionKind.Backward:
                yield return PipelineAction.F(a.Stage, a.MicroBatch);
                if (a.Stage < stageCount - 1) yield return PipelineAction.B(a.Stage + 1, a.MicroBatch);
                break;
        }
    }

    // Every rank runs its list in order; an action may run once all its prerequisites have run (sends never
    // block). If at some point no rank can move, the ranks are waiting on each other: a deadlock.
    private static void SimulateToCompletion(Schedule schedule)
    {
        var done = new HashSet<PipelineAction>();
        var next = new int[schedule.RankCount];
        int remaining = schedule.RankActions.Sum(a => a.Count);
        while (remaining > 0)
        {
            bool progressed = false;
            for (int r = 0; r < schedule.RankCount; r++)
            {
                var list = schedule.RankActions[r];
                while (next[r] < list.Count && Dependencies(list[next[r]], schedule.StageCount).All(done.Contains))
                {
                    done.Add(list[next[r]++]);
                    remaining--;
                    progressed = true;
                }
            }
            if (!progressed)
            {
                var stuck = Enumerable.Range(0, schedule.RankCount)
                    .Where(r => next[r] < schedule.RankActions[r].Count)
                    .Select(r =>
                    {
                        var a = schedule.RankActions[r][next[r]];
                        var missing = Dependencies(a, schedule.StageCount).Where(d => !done.Contains(d));
                        return $"rank {r} waits at {a} for {string.Join(", ", missing)}";
                    });
                var first = Enumerable.Range(0, schedule.RankCount).First(r => next[r] < schedule.RankActions[r].Count);
                Fail(schedule, "the ranks deadlock: " + string.Join("; ", stuck) + ".", schedule.RankActions[first][next[first]]);
            }
        }
    }

    private static void Fail(Schedule schedule, string problem, PipelineAction? offending = null)
    {
        var sb = new StringBuilder();
        sb.Append("Schedule '").Append(schedule.Name).Append("' is invalid: ").AppendLine(problem);
        for (int r = 0; r < schedule.RankCount; r++)
        {
            sb.Append("  rank ").Append(r).Append(':');
            foreach (var a in schedule.RankActions[r])
                sb.Append(offending == a ? $" [{a}]" : $" {a}");
            sb.AppendLine();
        }
        if (offending != null) sb.Append("  (the offending action is in brackets)");
        throw new InvalidScheduleException(sb.ToString().TrimEnd());
    }
}

using System.Text;

namespace PipeSharp.Schedules;

/// <summary>Thrown when a schedule is not runnable; the message shows the schedule grid and the offending action.</summary>
public sealed class InvalidScheduleException(string message) : Exception(message);

/// <summary>
/// Checks a schedule before it runs: the placement is consistent, every (stage, micro-batch) has exactly one
/// forward and (unless the schedule is forward-only) either one full backward B or one input-gradient I and one
/// weight-gradient W, each action sits on the rank that holds its stage, and a symbolic run of all ranks,
/// receiving by key as the runtime does, finishes (so dependencies hold and nothing deadlocks).
/// </summary>
public static class ScheduleValidator
{
    /// <summary>Throws <see cref="InvalidScheduleException"/> if <paramref name="schedule"/> cannot run.</summary>
    /// <param name="schedule">The schedule.</param>
    /// <param name="links">
    /// For a model whose stages exchange tensors beyond their neighbours: the (producer, consumer) stage pairs that
    /// exchange messages, which may skip stages (a tensor made in stage 0 and read in stage 2). The forward of a consumer
    /// then waits for the forward of every producer, the backward of a producer for the backward of every consumer.
    /// Null (the default): each stage takes its input from the previous one.
    /// </param>
    public static void Validate(Schedule schedule, IReadOnlySet<(int From, int To)>? links = null)
    {
        int p = schedule.StageCount, m = schedule.MicroBatchCount;
        if (p < 1 || m < 1) Fail(schedule, $"the stage count {p} and the micro-batch count {m} must both be at least 1.");
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
                if (forwardOnly) continue;
                bool b = seen.Contains(PipelineAction.B(s, i)), inp = seen.Contains(PipelineAction.I(s, i)), w = seen.Contains(PipelineAction.W(s, i));
                if (b && (inp || w))
                    Fail(schedule, $"stage {s}, micro-batch {i} has a full backward {PipelineAction.B(s, i)} and also a split one (I/W): use one or the other.", PipelineAction.B(s, i));
                if (!b && !inp)
                    Fail(schedule, $"backward of stage {s}, micro-batch {i} is missing: add {PipelineAction.B(s, i)}, or {PipelineAction.I(s, i)} and {PipelineAction.W(s, i)}.");
                if (inp && !w)
                    Fail(schedule, $"weight gradient {PipelineAction.W(s, i)} is missing for {PipelineAction.I(s, i)}.", PipelineAction.I(s, i));
                if (w && !inp)
                    Fail(schedule, $"input gradient {PipelineAction.I(s, i)} is missing for {PipelineAction.W(s, i)}.", PipelineAction.W(s, i));
            }
        }
        SimulateToCompletion(schedule, links);
    }

    /// <summary>
    /// The prerequisites of an action in <paramref name="schedule"/>: the actions whose results it receives or
    /// reuses. A forward needs the previous stage's forward; a backward (B or I) needs its own forward and the
    /// next stage's backward (B or I, whichever the schedule uses); a W needs its I.
    /// </summary>
    public static IEnumerable<PipelineAction> Dependencies(PipelineAction a, Schedule schedule) =>
        Dependencies(a, schedule.StageCount, schedule.SplitBackwards);

    internal static IEnumerable<PipelineAction> Dependencies(PipelineAction a, int stageCount, IReadOnlySet<(int, int)> split,
        IReadOnlySet<(int From, int To)>? links = null)
    {
        switch (a.Kind)
        {
            case ActionKind.Forward:
                if (links is null)
                {
                    if (a.Stage > 0) yield return PipelineAction.F(a.Stage - 1, a.MicroBatch);
                    break;
                }
                foreach (var (from, to) in links)
                    if (to == a.Stage) yield return PipelineAction.F(from, a.MicroBatch);
                break;
            case ActionKind.Backward:
            case ActionKind.InputGrad:
                yield return PipelineAction.F(a.Stage, a.MicroBatch);
                int[] consumers = links is null
                    ? (a.Stage < stageCount - 1 ? [a.Stage + 1] : [])
                    : links.Where(l => l.From == a.Stage).Select(l => l.To).ToArray();
                foreach (int c in consumers)
                {
                    yield return split.Contains((c, a.MicroBatch))
                        ? PipelineAction.I(c, a.MicroBatch)
                        : PipelineAction.B(c, a.MicroBatch);
                }
                break;
            case ActionKind.WeightGrad:
                yield return PipelineAction.I(a.Stage, a.MicroBatch);
                break;
        }
    }

    // Every rank runs its list in order; an action may run once all its prerequisites have run (sends never
    // block). If at some point no rank can move, the ranks are waiting on each other: a deadlock.
    private static void SimulateToCompletion(Schedule schedule, IReadOnlySet<(int From, int To)>? links)
    {
        var split = schedule.SplitBackwards;
        var done = new HashSet<PipelineAction>();
        var next = new int[schedule.RankCount];
        int remaining = schedule.RankActions.Sum(a => a.Count);
        while (remaining > 0)
        {
            bool progressed = false;
            for (int r = 0; r < schedule.RankCount; r++)
            {
                var list = schedule.RankActions[r];
                while (next[r] < list.Count && Dependencies(list[next[r]], schedule.StageCount, split, links).All(done.Contains))
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
                        var missing = Dependencies(a, schedule.StageCount, split, links).Where(d => !done.Contains(d));
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

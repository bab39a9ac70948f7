using PipeSharp.Runtime;
using PipeSharp.Schedules;
using PipeSharp.Tracing;

namespace PipeSharp.Bench.Speed;

/// <summary>
/// Where a pipelined step's time goes, from <see cref="Pipeline.LastStep"/>: the mean duration of each action kind per
/// stage, each rank's busy time, and the makespan the simulator predicts for this schedule from the measured duration
/// of every action (free hand-offs): what the schedule itself costs, apart from the runtime and the optimizer step.
/// </summary>
internal static class StepBreakdown
{
    public static void Print(string name, Pipeline pipeline, IReadOnlyList<StepStatistics> steps, bool timeline)
    {
        if (steps.Count == 0) return;
        var schedule = pipeline.Schedule;
        Console.WriteLine($"{name}: {schedule.Name}, {schedule.RankCount} ranks, {schedule.StageCount} stages (balance {string.Join(",", pipeline.Balance)}), " +
                          $"{schedule.MicroBatchCount} micro-batches; {steps.Count} steps" +
                          (pipeline.Options.ScheduleCosts is { } c ? $"; ordered by costs F {c.Forward * 1e3:F2}, I {c.InputGrad * 1e3:F2}, W {c.WeightGrad * 1e3:F2} (ms if measured)" : ""));
        var timings = steps.SelectMany(s => s.Timeline).ToList();
        foreach (var group in timings.GroupBy(t => t.Action.Stage).OrderBy(g => g.Key))
        {
            var parts = group.GroupBy(t => t.Action.Kind).OrderBy(g => g.Key)
                .Select(g => $"{Letter(g.Key)} {g.Average(t => t.End - t.Start) * 1e3,6:F2} ms");
            Console.WriteLine($"  stage {group.Key} (rank {schedule.StageToRank[group.Key]}): {string.Join("  ", parts)}");
        }
        double wall = steps.Average(s => s.WallSeconds);
        var actionsEnd = steps.Average(s => s.Timeline.Max(t => t.End) - s.Timeline.Min(t => t.Start));
        var busy = Enumerable.Range(0, schedule.RankCount)
            .Select(r => steps.Average(s => s.Timeline.Where(t => t.Rank == r).Sum(t => t.End - t.Start))).ToList();
        var simulated = steps.Average(s =>
        {
            var duration = s.Timeline.ToDictionary(t => t.Action, t => t.End - t.Start);
            return ScheduleSimulator.Simulate(schedule, a => duration[a], 0).Makespan;
        });
        Console.WriteLine($"  step {wall * 1e3:F1} ms: actions {actionsEnd * 1e3:F1} ms (simulated from their durations: {simulated * 1e3:F1} ms), " +
                          $"after them {(wall - actionsEnd) * 1e3:F1} ms (norm, clip, optimizer, statistics); " +
                          $"busy in actions per rank: {string.Join(", ", busy.Select(b => $"{b * 1e3:F1} ms"))}");
        if (schedule.Name is "zb-v" or "zb-h1")
        {
            // The same actions with the same durations in the order the generator makes from F = I = W.
            var equal = ScheduleGenerators.Create(schedule.Name, schedule.RankCount, schedule.MicroBatchCount, costs: ActionCosts.Unit);
            double equalSpan = steps.Average(s =>
            {
                var duration = s.Timeline.ToDictionary(t => t.Action, t => t.End - t.Start);
                return ScheduleSimulator.Simulate(equal, a => duration[a], 0).Makespan;
            });
            Console.WriteLine($"  simulated from the same durations in the F = I = W order: {equalSpan * 1e3:F1} ms; the busier rank's work (the bound): {busy.Max() * 1e3:F1} ms");
        }
        if (timeline) Console.WriteLine(TimelineText.Render(steps[^1].Timeline, schedule.RankCount));
    }

    private static string Letter(ActionKind kind) => kind switch
    {
        ActionKind.Forward => "F",
        ActionKind.Backward => "B",
        ActionKind.InputGrad => "I",
        ActionKind.WeightGrad => "W",
        _ => kind.ToString(),
    };
}

namespace PipeSharp.Schedules;

/// <summary>The predicted run of a schedule.</summary>
public sealed class SimulationResult
{
    internal SimulationResult(double makespan, double[] busy, int[] peakActivations, int[] peakWeightGradInputs, IReadOnlyList<ActionTiming> timeline)
    {
        Makespan = makespan;
        RankBusy = busy;
        PeakActivations = peakActivations;
        PeakWeightGradInputs = peakWeightGradInputs;
        Timeline = timeline;
    }

    /// <summary>Time from the first action's start to the last action's end.</summary>
    public double Makespan { get; }

    /// <summary>Time each rank spends computing.</summary>
    public IReadOnlyList<double> RankBusy { get; }

    /// <summary>Time each rank sits idle within the makespan.</summary>
    public IReadOnlyList<double> RankIdle => RankBusy.Select(b => Makespan - b).ToList();

    /// <summary>Idle share of all ranks' time: total idle / (ranks x makespan).</summary>
    public double BubbleFraction => Makespan <= 0 ? 0 : RankIdle.Sum() / (RankBusy.Count * Makespan);

    /// <summary>
    /// For each rank, the largest number of (stage, micro-batch) activations held at once for the input gradient:
    /// from a forward until its B or I (the measure of the GPipe, 1F1B and Zero Bubble papers).
    /// </summary>
    public IReadOnlyList<int> PeakActivations { get; }

    /// <summary>
    /// For each rank, the largest number of (stage, micro-batch) pairs held at once from a forward until the weight
    /// gradient is done (its B, or its W): what a split backward keeps alive longer. Equal to
    /// <see cref="PeakActivations"/> for schedules without I/W.
    /// </summary>
    public IReadOnlyList<int> PeakWeightGradInputs { get; }

    /// <summary>Every action with its predicted start and end.</summary>
    public IReadOnlyList<ActionTiming> Timeline { get; }
}

/// <summary>
/// Runs a schedule in time: every rank executes its list in order; an action starts when its rank is free and
/// every prerequisite has finished (plus the communication time when it ran on another rank).
/// </summary>
public static class ScheduleSimulator
{
    /// <summary>Simulates <paramref name="schedule"/> with the same costs for every stage.</summary>
    /// <exception cref="InvalidScheduleException">The schedule deadlocks.</exception>
    public static SimulationResult Simulate(Schedule schedule, ActionCosts costs) =>
        Simulate(schedule, (a) => costs.Of(a.Kind), costs.Communication);

    /// <summary>Simulates <paramref name="schedule"/> with a cost per action (e.g. per stage).</summary>
    public static SimulationResult Simulate(Schedule schedule, Func<PipelineAction, double> cost, double communication)
    {
        var split = schedule.SplitBackwards;
        var end = new Dictionary<PipelineAction, double>();
        int ranks = schedule.RankCount;
        var next = new int[ranks];
        var free = new double[ranks];
        var busy = new double[ranks];
        var held = new int[ranks];
        var peak = new int[ranks];
        var heldW = new int[ranks];
        var peakW = new int[ranks];
        var timeline = new List<ActionTiming>();
        int remaining = schedule.RankActions.Sum(a => a.Count);
        while (remaining > 0)
        {
            bool progressed = false;
            for (int r = 0; r < ranks; r++)
            {
                var list = schedule.RankActions[r];
                while (next[r] < list.Count)
                {
                    var a = list[next[r]];
                    double start = free[r];
                    bool ready = true;
                    foreach (var d in ScheduleValidator.Dependencies(a, schedule.StageCount, split))
                    {
                        if (!end.TryGetValue(d, out double t)) { ready = false; break; }
                        double hop = schedule.StageToRank[d.Stage] == r ? 0 : communication;
                        start = Math.Max(start, t + hop);
                    }
                    if (!ready) break;
                    double duration = cost(a);
                    end[a] = start + duration;
                    free[r] = start + duration;
                    busy[r] += duration;
                    timeline.Add(new ActionTiming(r, a, start, start + duration));
                    if (a.Kind == ActionKind.Forward && !schedule.IsForwardOnly)
                    {
                        peak[r] = Math.Max(peak[r], ++held[r]);
                        peakW[r] = Math.Max(peakW[r], ++heldW[r]);
                    }
                    if (a.Kind is ActionKind.Backward or ActionKind.InputGrad) held[r]--;
                    if (a.Kind is ActionKind.Backward or ActionKind.WeightGrad) heldW[r]--;
                    next[r]++;
                    remaining--;
                    progressed = true;
                }
            }
            if (!progressed) ScheduleValidator.Validate(schedule); // throws with the grid and the stuck actions
        }
        double makespan = timeline.Count == 0 ? 0 : timeline.Max(t => t.End) - timeline.Min(t => t.Start);
        return new SimulationResult(makespan, busy, peak, peakW, timeline.OrderBy(t => t.Rank).ThenBy(t => t.Start).ToList());
    }
}

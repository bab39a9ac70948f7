using PipeSharp.Memory;
using PipeSharp.Runtime;
using PipeSharp.Schedules;

namespace PipeSharp.Planning;

/// <summary>One layout to predict: ranks x replicas x micro-batches x schedule x recomputation x threads.</summary>
internal sealed record PlanLayout(int Ranks, int Replicas, int MicroBatches, string Schedule, bool FullRecomputation, int Threads)
{
    public int StagesPerRank => ScheduleGenerators.StagesPerRank(Schedule, null);

    public int Stages => Ranks * StagesPerRank;
}

/// <summary>
/// Predicts a layout's step from the profile of its micro-batch: each stage's F, B, I and W are its layers' sums
/// (each profiled layer's figure holds one trivial action's time, taken off, and the stage's action gets the runtime's
/// per-action time once), the schedule is generated and run in the simulator (messages between ranks cost the link's
/// time for the largest boundary tensor, at least the runtime's hand-over), and the step is the runtime's fixed time
/// (for its number of workers) plus the simulated makespan plus
/// the slowest rank's optimizer step, gradient norm and other work outside the actions (zeroing gradients, freeing
/// temporaries: the profiled step's remainder, shared by parameter bytes), plus, with replicas, the sum of their gradients. Memory: the
/// memory model on the stages' bytes.
/// </summary>
internal static class StepModel
{
    public static PlanCandidate? Predict(PlanLayout layout, ModelProfile profile, PlanRequest request, LinkCost link, RuntimeOverheads overheads,
        Func<ModelProfile, Schedule, bool, IReadOnlyList<int>> split)
    {
        int layers = profile.Layers.Count;
        if (layout.Stages > layers) return null;
        // The schedule's placement and peaks first (its actions' order may depend on the costs, its placement does not).
        if (Generate(layout, null) is not { } shape) return null;
        var balance = split(profile, shape, layout.FullRecomputation);
        var stages = StageCosts(profile, balance, layout.FullRecomputation, overheads);
        var mean = new ActionCosts(stages.Average(s => s.F), stages.Average(s => s.B), stages.Average(s => s.I), stages.Average(s => s.W));
        if (Generate(layout, mean) is not { } schedule) return null;
        // A message between ranks: the link's time, and at least the runtime's hand-over to a waiting rank.
        long boundary = stages.Max(s => s.OutputBytes);
        double hop = layout.Ranks > 1 ? Math.Max(link.LatencySeconds, overheads.HandOverSeconds) + link.SecondsPerByte * boundary : 0;
        var sim = ScheduleSimulator.Simulate(schedule, a => a.Kind switch
        {
            ActionKind.Forward => stages[a.Stage].F,
            ActionKind.Backward => stages[a.Stage].B,
            ActionKind.InputGrad => stages[a.Stage].I,
            _ => stages[a.Stage].W,
        }, hop);
        long totalParameters = Math.Max(1, profile.Layers.Sum(l => l.ParameterBytes));
        double other = OtherBeyondActions(profile, overheads, totalParameters);
        var after = new double[layout.Ranks];
        var busy = new double[layout.Ranks];
        for (int s = 0; s < stages.Count; s++)
        {
            int r = schedule.StageToRank[s];
            double share = (double)stages[s].ParameterBytes / totalParameters;
            double optimizer = profile.OptimizerSeconds * share;
            after[r] += optimizer + other * share + stages[s].ParameterBytes * overheads.NormSecondsPerByte / layout.Replicas; // the D workers share the norm
            busy[r] += optimizer;
        }
        // Busy time as the runtime measures it: the actions' durations, without the hand-over between them.
        double gap = overheads.ActionSeconds - overheads.InActionSeconds;
        for (int r = 0; r < layout.Ranks; r++) busy[r] += Math.Max(0, sim.RankBusy[r] - gap * schedule.RankActions[r].Count);
        // In one process the D workers of a rank sum its stages' gradients over the replicas, each a 1/D share of them:
        // D - 1 adds and D - 1 copies of each, in parallel.
        var rankParameters = new double[layout.Ranks];
        for (int s = 0; s < stages.Count; s++) rankParameters[schedule.StageToRank[s]] += stages[s].ParameterBytes;
        double reduction = layout.Replicas > 1
            ? rankParameters.Max() * 2.0 * (layout.Replicas - 1) / layout.Replicas * overheads.AddSecondsPerByte : 0;
        double step = overheads.StepSecondsFor(layout.Ranks * layout.Replicas) + sim.Makespan + after.Max() + reduction;
        var memory = MemoryModel.Predict(schedule, MemoryInputs(profile, balance, stages, layout, schedule));
        double samples = request.BatchSize / step;
        return new PlanCandidate(layout.Ranks, layout.Replicas, layout.MicroBatches, layout.Schedule, layout.StagesPerRank,
            layout.FullRecomputation ? Recomputation.Full : Recomputation.None, layout.Threads, balance, mean with { Communication = hop },
            step, samples, samples * request.TokensPerSample, memory.Ranks.Select(r => r.TotalBytes).ToList(), sim.BubbleFraction, busy)
        {
            PredictedActionSeconds = sim.Makespan,
        };
    }

    /// <summary>
    /// The profiled step's work outside its actions that neither the optimizer figure nor the gradient norm holds, nor
    /// the runtime's fixed part: zeroing the gradients and freeing the step's temporaries, which grow with the
    /// parameters (0 for a profile that did not measure it).
    /// </summary>
    internal static double OtherBeyondActions(ModelProfile profile, RuntimeOverheads overheads, long totalParameterBytes) =>
        profile.BeyondActionsSeconds <= 0 ? 0
            : Math.Max(0, profile.BeyondActionsSeconds - overheads.StepSeconds - profile.OptimizerSeconds - totalParameterBytes * overheads.NormSecondsPerByte);

    internal sealed record StageCost(double F, double B, double I, double W, long ParameterBytes, long InputBytes, long OutputBytes, long ActivationBytes, int Layers);

    internal static List<StageCost> StageCosts(ModelProfile profile, IReadOnlyList<int> balance, bool recompute, RuntimeOverheads overheads)
    {
        var result = new List<StageCost>();
        int first = 0;
        long input = profile.InputBytes;
        foreach (int count in balance)
        {
            var ls = profile.Layers.Skip(first).Take(count).ToList();
            double Sum(Func<LayerCost, double> of) => Math.Max(0, ls.Sum(of) - count * overheads.InActionSeconds) + overheads.ActionSeconds;
            double forward = ls.Sum(l => l.Forward);
            double again = recompute ? forward : 0; // a recomputing backward runs the stage's forward first
            result.Add(new StageCost(Sum(l => l.Forward), Sum(l => l.Backward) + again, Sum(l => l.InputGrad) + again, Sum(l => l.WeightGrad),
                ls.Sum(l => l.ParameterBytes), input, ls[^1].OutputBytes, ls.Sum(l => l.ActivationBytes), count));
            input = ls[^1].OutputBytes;
            first += count;
        }
        return result;
    }

    // The layout's schedule, validated; null if the schedule cannot run it (e.g. too few micro-batches for interleaved).
    private static Schedule? Generate(PlanLayout layout, ActionCosts? costs)
    {
        try
        {
            var schedule = ScheduleGenerators.Create(layout.Schedule, layout.Ranks, layout.MicroBatches,
                layout.Schedule == "interleaved" ? layout.StagesPerRank : null, costs);
            ScheduleValidator.Validate(schedule);
            return schedule;
        }
        catch (ArgumentException)
        {
            return null;
        }
    }

    private static MemoryModelInputs MemoryInputs(ModelProfile profile, IReadOnlyList<int> balance, List<StageCost> stages, PlanLayout layout, Schedule schedule)
    {
        var split = schedule.SplitBackwards.Select(b => b.Stage).ToHashSet();
        var inputs = stages.Select((s, i) => new StageMemoryInputs(i, s.Layers, s.ParameterBytes, 0,
            layout.FullRecomputation ? s.InputBytes : s.ActivationBytes, s.InputBytes, s.OutputBytes,
            layout.FullRecomputation ? s.ActivationBytes : 0,
            split.Contains(i) ? Math.Max(s.InputBytes, s.OutputBytes) * s.Layers : 0)).ToList();
        long parameters = profile.Layers.Sum(l => l.ParameterBytes);
        double factor = parameters == 0 ? 2 : (double)profile.Layers.Sum(l => l.OptimizerBytes) / parameters;
        return new MemoryModelInputs(inputs, factor, $"{factor:0.#} x parameters, from the profile", ReceivesIntoOwnBuffers: false,
            GradientsKeptBetweenSteps: true);
    }
}

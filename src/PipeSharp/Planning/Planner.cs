using PipeSharp.Construction;
using PipeSharp.Memory;
using PipeSharp.Partitioning;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Planning;

/// <summary>
/// Chooses how to train a model on the devices given: searches ranks x replicas x micro-batches x schedule (gpipe,
/// 1f1b, interleaved, zb-h1, zb-v) x recomputation (none, full) x intra-op threads per rank, predicts each layout's
/// step time from measured profiles with the calibrated simulator and its memory with the memory model, drops those
/// over the memory budget and ranks the rest by predicted throughput. See docs/planning.md.
/// </summary>
public static class Planner
{
    /// <summary>
    /// Plans the training of <paramref name="model"/>: profiles it (through <paramref name="cache"/>) once per intra-op
    /// thread count and micro-batch size the search needs, measures the runtime's own overheads and the in-process
    /// link, and returns every layout that fits, best first.
    /// </summary>
    /// <param name="model">The model.</param>
    /// <param name="sample">Makes a sample micro-batch of the given number of samples (input and target).</param>
    /// <param name="loss">The loss of a micro-batch, as the pipeline takes it.</param>
    /// <param name="optimizer">Makes a stage's optimizer, as the pipeline takes it.</param>
    /// <param name="request">The batch, the devices and budgets, and any settings to keep fixed.</param>
    /// <param name="cache">Where profiles are kept (null: measured every time).</param>
    /// <param name="log">Where to say what is being measured (null: nowhere).</param>
    /// <exception cref="ArgumentException">A bad request (the message names the setting and what would do), or no layout fits the budget.</exception>
    /// <exception cref="InvalidDataException">A cached profile cannot be read (checked before anything is measured).</exception>
    public static IReadOnlyList<PlanCandidate> Plan(ModelSpec model, Func<int, (Tensor Input, Tensor Target)> sample, Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer, PlanRequest request, ProfileCache? cache = null, TextWriter? log = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sample);
        ArgumentNullException.ThrowIfNull(request);
        var layouts = PlanSpace.Layouts(request, model.Layers.Count);
        const string device = "cpu";
        var needs = layouts.Select(l => (l.Threads, Samples: request.BatchSize / l.Replicas / l.MicroBatches)).Distinct().OrderBy(n => n.Threads).ThenBy(n => n.Samples).ToList();

        // Every key first, so that a corrupt cache file is reported before anything is measured.
        var keys = new Dictionary<(int Threads, int Samples), string>();
        var built = new List<nn.Module>();
        try
        {
            for (int i = 0; i < model.Layers.Count; i++) built.Add(model.BuildLayer(i));
            foreach (var need in needs)
            {
                var (input, target) = sample(need.Samples);
                using (input)
                using (target)
                    keys[need] = ProfileKey.Hash(ProfileKey.Describe(built, input, device, need.Threads));
            }
        }
        finally
        {
            foreach (var l in built) l.Dispose();
        }
        cache?.CheckReadable(keys.Values);
        foreach (int t in needs.Select(n => n.Threads).Distinct())
            cache?.TryRead<RuntimeOverheads>(RuntimeOverheads.KeyOf(device, t), o => o.Key);

        var profiles = new Dictionary<(int, int), ModelProfile>();
        foreach (var need in needs)
        {
            if (cache?.TryRead(keys[need]) is { } cached)
            {
                profiles[need] = CheckSpeed(model, sample, loss, optimizer, cached, request.SpeedCheckSteps, log);
                continue;
            }
            log?.WriteLine($"profiling {model.Layers.Count} layers: micro-batch of {need.Samples} sample(s), {need.Threads} thread(s)");
            var (input, target) = sample(need.Samples);
            using (input)
            using (target)
                profiles[need] = ModelProfiler.Profile(model, input, target, loss, optimizer, need.Threads, device, request.ProfileRepeats, cache);
        }
        var overheads = needs.Select(n => n.Threads).Distinct().ToDictionary(t => t, t => RuntimeOverheads.Measure(device, t, cache));
        var link = LinkProfiler.InProcess();
        return Search(request, layouts, l => profiles[(l.Threads, request.BatchSize / l.Replicas / l.MicroBatches)], link, l => overheads[l.Threads]);
    }

    // A cached profile, scaled to the machine's speed now: its step runs again and every time is multiplied by how much
    // longer (or shorter) it takes than when it was measured. Without the check a plan made on a slower or busier
    // machine than the profile's predicted too little (the GPT's best plan 11% under its measured step).
    private static ModelProfile CheckSpeed(ModelSpec model, Func<int, (Tensor Input, Tensor Target)> sample, Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer, ModelProfile cached, int steps, TextWriter? log)
    {
        if (steps < 1 || cached.StepSeconds <= 0) return cached;
        var (input, target) = sample(cached.MicroBatchSamples);
        double factor;
        using (input)
        using (target)
            factor = ModelProfiler.SpeedFactor(model, input, target, loss, optimizer, cached, steps);
        log?.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"profile of {cached.MicroBatchSamples} sample(s), {cached.Threads} thread(s) from the cache: its step takes {factor:0.00} x the cached time now, and the profile is scaled by it"));
        return cached.ScaledBy(factor);
    }

    /// <summary>Predicts every layout and keeps those within the budget, best (highest throughput) first.</summary>
    internal static IReadOnlyList<PlanCandidate> Search(PlanRequest request, IReadOnlyList<PlanLayout> layouts, Func<PlanLayout, ModelProfile> profile,
        LinkCost link, Func<PlanLayout, RuntimeOverheads> overheads)
    {
        var all = layouts.Select(l => StepModel.Predict(l, profile(l), request, link, overheads(l),
            (p, schedule, full) => SplitFor(p, schedule, full, request.MemoryPerDevice))).OfType<PlanCandidate>().ToList();
        if (all.Count == 0)
            throw new ArgumentException(
                "no layout of the search can run this model (every schedule refused the ranks and micro-batches tried): " +
                "leave Ranks, MicroBatches and Schedule (--ranks, --microbatches, --schedule) unset, or give a larger batch.", "request");
        var budgets = request.MemoryPerDevice;
        var fits = budgets is null ? all : all.Where(c => Fits(c, budgets)).ToList();
        if (fits.Count == 0)
        {
            var smallest = all.MinBy(c => c.LargestRankBytes)!;
            throw new ArgumentException(
                $"no layout fits MemoryPerDevice (--memory-per-device) {string.Join(",", budgets!.Select(MemorySize.Format))}: the smallest " +
                $"any of the {all.Count} layouts tried needs is {MemorySize.Format(smallest.LargestRankBytes)} per rank ({smallest.LargestRankBytes:N0} bytes), " +
                $"for {smallest}. Give at least that much, or more ranks or devices.", "memoryPerDevice");
        }
        return fits.OrderByDescending(c => c.SamplesPerSecond).ThenBy(c => c.LargestRankBytes).ToList();
    }

    /// <summary>
    /// The split of the profiled layers over <paramref name="schedule"/>'s stages the planner predicts with:
    /// <see cref="StagePartitioner"/> on each layer's F + B (with recomputation, F twice), the schedule's placement,
    /// the boundary bytes and, with <see cref="PlanRequest.MemoryPerDevice"/>, each rank's parameters, gradients,
    /// optimizer state and the activations of the micro-batches the schedule holds; of the splits within
    /// <see cref="BalanceSelection.AutoMargin"/> of the fastest, the one best balanced by parameter bytes, as
    /// <c>BalanceMode.Auto</c> picks. If no split fits the budget, the fastest (the candidate is then dropped as over it).
    /// </summary>
    internal static IReadOnlyList<int> SplitFor(ModelProfile profile, Schedule schedule, bool fullRecomputation, IReadOnlyList<long>? budgets)
    {
        var layers = profile.Layers;
        if (budgets is not null && budgets.Count != 1 && budgets.Count != schedule.RankCount) budgets = null; // Fits drops such a layout
        var problem = new PartitionProblem
        {
            LayerSeconds = layers.Select(l => l.Forward * (fullRecomputation ? 2 : 1) + l.Backward).ToArray(),
            StageToRank = schedule.StageToRank,
            MemoryPerDevice = budgets,
            LayerStateBytes = budgets is null ? null : layers.Select(l => 2 * l.ParameterBytes + l.OptimizerBytes).ToArray(),
            // With full recomputation a stage keeps only its input per micro-batch: the previous layer's output.
            LayerActivationBytes = budgets is null ? null : layers.Select((l, i) => fullRecomputation ? 0 : l.ActivationBytes).ToArray(),
            LayerOutputBytes = layers.Select(l => l.OutputBytes).ToArray(),
            StagePeakMicroBatches = PartitionProblem.StagePeaks(schedule),
        };
        var preference = layers.Select(l => (double)l.ParameterBytes).ToArray();
        try
        {
            return StagePartitioner.SolveWithin(problem, BalanceSelection.AutoMargin, preference).Balance;
        }
        catch (PartitionDoesNotFitException)
        {
            return StagePartitioner.SolveWithin(problem with { MemoryPerDevice = null }, BalanceSelection.AutoMargin, preference).Balance;
        }
    }

    private static bool Fits(PlanCandidate c, IReadOnlyList<long> budgets)
    {
        if (budgets.Count != 1 && budgets.Count != c.Ranks) return false;
        for (int r = 0; r < c.Ranks; r++)
            if (c.PeakMemoryPerRank[r] > (budgets.Count == 1 ? budgets[0] : budgets[r])) return false;
        return true;
    }
}

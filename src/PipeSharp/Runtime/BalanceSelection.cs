using PipeSharp.Backends;
using PipeSharp.Partitioning;
using PipeSharp.Schedules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// The layers per stage of a pipeline given no <see cref="PipelineOptions.Balance"/>, by its
/// <see cref="PipelineOptions.BalanceMode"/>: parameter count, equal counts, measured time, or the partitioner on the
/// measured time with the placement, <see cref="PipelineOptions.DeviceSpeeds"/> and <see cref="PipelineOptions.MemoryPerDevice"/>.
/// Across processes every process measures, and the measurements are averaged, so that all of them cut alike.
/// </summary>
internal static class BalanceSelection
{
    /// <summary>Auto takes, among the splits predicted within this share of the fastest, the one best balanced by parameter count.</summary>
    public const double AutoMargin = 0.05;

    /// <summary>Refuses options that contradict each other or that a mode lacks, before anything is measured.</summary>
    public static void CheckOptions(PipelineOptions options)
    {
        if (!Enum.IsDefined(options.BalanceMode))
            throw new ArgumentOutOfRangeException("balanceMode", options.BalanceMode,
                $"BalanceMode {(int)options.BalanceMode} is not a mode: use one of {string.Join(", ", Enum.GetNames<BalanceMode>())}.");
        if (options.Balance is not null && options.BalanceMode != BalanceMode.Parameters)
            throw new ArgumentException(
                $"Balance ({string.Join(",", options.Balance)}) and BalanceMode {options.BalanceMode} are both set: give the layer counts or a mode, not both.",
                "balanceMode");
        if (options.Balance is null && options.BalanceMode is BalanceMode.Time or BalanceMode.Auto && options.ProfileInput is null)
            throw new ArgumentException(
                $"BalanceMode {options.BalanceMode} measures each layer on one micro-batch: set ProfileInput to a batch like the training ones " +
                "(or use BalanceMode Parameters or Uniform, or give Balance).", "profileInput");
    }

    /// <summary>Refuses speeds that are not one positive finite factor per rank.</summary>
    public static void CheckSpeeds(IReadOnlyList<double>? speeds, int ranks)
    {
        if (speeds is null) return;
        if (speeds.Count != ranks)
            throw new ArgumentException(
                $"DeviceSpeeds has {speeds.Count} entries for {ranks} ranks: give one speed factor per rank, e.g. {string.Join(",", Enumerable.Repeat("1", ranks))} " +
                $"(CLI: --device-speeds {string.Join(",", Enumerable.Repeat("1", ranks))}; a device half as fast: 0.5).", "deviceSpeeds");
        for (int r = 0; r < ranks; r++)
            if (!(speeds[r] > 0) || double.IsInfinity(speeds[r]))
                throw new ArgumentException(
                    $"DeviceSpeeds[{r}] is {speeds[r]}: a speed factor must be a positive finite number (1 for the reference device, 0.5 for one half as fast).",
                    "deviceSpeeds");
    }

    /// <summary>The layers per stage for <paramref name="schedule"/>.</summary>
    /// <param name="options">The pipeline's options (mode, speeds, budgets, profile input).</param>
    /// <param name="schedule">The training schedule: its placement and its micro-batches held per stage.</param>
    /// <param name="source">The model, to count and to measure.</param>
    /// <param name="backend">Where the ranks run: across processes, the measurements are averaged.</param>
    /// <param name="optimizerFactor">Optimizer state per parameter byte (asked for by Auto with a budget).</param>
    public static IReadOnlyList<int> Choose(PipelineOptions options, Schedule schedule, ModelSource source, IBackend backend, Func<double> optimizerFactor)
    {
        int stages = schedule.StageCount;
        switch (options.BalanceMode)
        {
            case BalanceMode.Uniform:
                return Balance.ByCost(Enumerable.Repeat(1.0, source.LayerCount).ToList(), stages);
            case BalanceMode.Time:
                return Balance.ByCost(Measure(options, schedule, source, backend).Seconds, stages);
            case BalanceMode.Auto:
                return Auto(options, schedule, source, backend, optimizerFactor).Balance;
            default:
                return Balance.ByCost(source.Costs(), stages);
        }
    }

    /// <summary>
    /// The partitioner's split on the measured layers: among those predicted within <see cref="AutoMargin"/> of the
    /// fastest, the one best balanced by parameter count (a steady tie-break for noisy measurements).
    /// </summary>
    public static Partition Auto(PipelineOptions options, Schedule schedule, ModelSource source, IBackend backend, Func<double> optimizerFactor)
    {
        var measured = Measure(options, schedule, source, backend);
        long[]? state = null;
        if (options.MemoryPerDevice is not null)
        {
            double perParameterByte = 2 + optimizerFactor(); // the parameter, its gradient and the optimizer's state
            state = source.LayerParameters().Select(l => (long)Math.Round(l.Sum(p => p.Bytes) * perParameterByte)).ToArray();
        }
        var problem = new PartitionProblem
        {
            LayerSeconds = measured.Seconds,
            StageToRank = schedule.StageToRank,
            DeviceSpeeds = options.DeviceSpeeds,
            MemoryPerDevice = options.MemoryPerDevice,
            LayerStateBytes = state,
            LayerActivationBytes = measured.ActivationBytes,
            LayerOutputBytes = measured.OutputBytes,
            StagePeakMicroBatches = PartitionProblem.StagePeaks(schedule),
        };
        try
        {
            return StagePartitioner.SolveWithin(problem, AutoMargin, source.Costs());
        }
        catch (PartitionDoesNotFitException)
        {
            // No split fits: the fastest one goes on to the pipeline's memory check, which refuses it with the whole
            // prediction and the changes that would fit (more ranks, another schedule, recomputation).
            return StagePartitioner.SolveWithin(problem with { MemoryPerDevice = null }, AutoMargin, source.Costs());
        }
    }

    // One micro-batch of the profile input, each layer measured with a rank's intra-op threads (as PipelinePlan decides
    // them); across processes the average of every process's.
    private static LayerMeasurement Measure(PipelineOptions options, Schedule schedule, ModelSource source, IBackend backend)
    {
        var parts = MicroBatches.Split(options.ProfileInput!, options.MicroBatches * options.Replicas, "profileInput");
        int workersHere = backend.ProcessCount > 1 ? backend.ProcessesOnThisHost : schedule.RankCount * options.Replicas;
        int threads = options.ThreadsPerRank ?? Math.Max(1, Environment.ProcessorCount / workersHere);
        LayerMeasurement measured;
        using (var scope = NewDisposeScope())
            measured = source.Measure(parts[0], threads);
        if (backend.ProcessCount <= 1) return measured;
        int count = backend.ProcessCount;
        var seconds = backend.AllReduceSum(measured.Seconds).Select(t => t / count).ToArray();
        var bytes = backend.AllReduceSum([.. measured.ActivationBytes, .. measured.OutputBytes]).Select(b => b / count).ToArray();
        int n = measured.Seconds.Length;
        return new LayerMeasurement(seconds, bytes[..n], bytes[n..]);
    }
}

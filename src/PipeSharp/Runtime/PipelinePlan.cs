using PipeSharp.Backends;
using PipeSharp.Devices;
using PipeSharp.Partitioning;
using PipeSharp.Schedules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// What a pipeline will run, worked out from its options before anything starts: the training schedule (validated),
/// the layers of each stage, the device of each rank, the topology of ranks and replicas (which of them run in this
/// process) and the intra-op threads of each rank's worker.
/// </summary>
internal sealed record PipelinePlan(
    Schedule Schedule,
    Schedule ForwardSchedule,
    IReadOnlyList<int> Balance,
    IReadOnlyList<Device> RankDevices,
    int Replicas,
    IReadOnlyList<int> HostedRanks,
    int ThreadsPerRank)
{
    /// <summary>Which activations training forwards keep (<see cref="PipelineOptions.Recomputation"/>).</summary>
    public Recomputation Recomputation { get; init; } = Recomputation.None;

    /// <summary>Pipeline ranks per replica.</summary>
    public int Ranks => Schedule.RankCount;

    /// <summary>True when every rank of every replica runs in this process.</summary>
    public bool HostsAll => HostedRanks.Count == Ranks * Replicas;

    /// <summary>The replicas this process runs ranks of, in order.</summary>
    public IReadOnlyList<int> LocalReplicas => HostedRanks.Select(r => r / Ranks).Distinct().ToList();

    /// <summary>True if this process runs stage <paramref name="stage"/> (of every local replica).</summary>
    public bool IsLocal(int stage) => HostsAll || HostedRanks.Contains(JobRank(LocalReplicas[0], Schedule.StageToRank[stage]));

    /// <summary>The job rank of <paramref name="rank"/> in <paramref name="replica"/>: replica x ranks + rank.</summary>
    public int JobRank(int replica, int rank) => replica * Ranks + rank;

    private readonly Dictionary<int, Schedule> _smallForwardSchedules = new();

    /// <summary>
    /// The forward-only schedule for a batch of <paramref name="perReplica"/> samples per replica: one with fewer samples
    /// than the micro-batches (one sequence when generating text) runs as that many micro-batches, so inference takes
    /// any batch size.
    /// </summary>
    public Schedule ForwardScheduleFor(long perReplica)
    {
        int m = Schedule.MicroBatchCount;
        if (perReplica >= m || perReplica < 1) return ForwardSchedule;
        lock (_smallForwardSchedules)
        {
            if (!_smallForwardSchedules.TryGetValue((int)perReplica, out var schedule))
                _smallForwardSchedules[(int)perReplica] = schedule = ScheduleGenerators.ForwardOnly(Schedule.StageCount, (int)perReplica, Schedule.StageToRank);
            return schedule;
        }
    }

    /// <summary>The plan for a built model's <paramref name="layers"/>, balanced by parameter count.</summary>
    public static PipelinePlan Create(PipelineOptions options, IReadOnlyList<nn.Module> layers, IBackend backend, bool copiesModel) =>
        Create(options, layers.Count, () => ModelSplitter.ParameterCounts(layers), backend, copiesModel);

    /// <param name="options">The pipeline's options.</param>
    /// <param name="layerCount">The model's number of layers.</param>
    /// <param name="costs">Each layer's cost for automatic balancing (asked for only without a balance).</param>
    /// <param name="backend">Where the ranks run.</param>
    /// <param name="copiesModel">True if each in-process replica can get its own copy of the model (a model factory or spec was given).</param>
    /// <param name="chooseBalance">
    /// The layers per stage for the schedule when no balance is given (<see cref="BalanceSelection"/>); null: by <paramref name="costs"/>.
    /// </param>
    public static PipelinePlan Create(PipelineOptions options, int layerCount, Func<IReadOnlyList<double>> costs, IBackend backend, bool copiesModel,
        Func<Schedule, IReadOnlyList<int>>? chooseBalance = null)
    {
        if (options.MicroBatches < 1)
            throw new ArgumentOutOfRangeException("microBatches", options.MicroBatches,
                "MicroBatches must be at least 1 (1 means no micro-batching).");
        if (options.ThreadsPerRank is < 1)
            throw new ArgumentOutOfRangeException("threadsPerRank", options.ThreadsPerRank,
                "ThreadsPerRank must be at least 1, or null for the processor count divided by the ranks on this host.");
        CheckMaxGradNorm(options.MaxGradNorm);
        if (options.Ranks is < 1)
            throw new ArgumentOutOfRangeException("ranks", options.Ranks, "Ranks (pipeline ranks per replica) must be at least 1.");
        if (options.Replicas < 1)
            throw new ArgumentOutOfRangeException("replicas", options.Replicas, "Replicas (copies of the pipeline) must be at least 1.");
        BalanceSelection.CheckOptions(options);

        var schedule = File.Exists(options.Schedule) ? FromFile(options) : Generate(options, layerCount);
        ScheduleValidator.Validate(schedule);
        int pieces = schedule.StageCount;
        BalanceSelection.CheckSpeeds(options.DeviceSpeeds, schedule.RankCount);
        IReadOnlyList<int> balance = options.Balance != null
            ? Partitioning.Balance.Check(options.Balance, layerCount)
            : CheckPieces(pieces, layerCount, schedule) is var checkedPieces && chooseBalance is not null
                ? chooseBalance(schedule)
                : Partitioning.Balance.ByCost(costs(), checkedPieces);
        if (balance.Count != pieces)
            throw new ArgumentException(
                $"balance has {balance.Count} entries but schedule '{schedule.Name}' cuts the model into {pieces} stages " +
                $"({schedule.RankCount} ranks x {pieces / schedule.RankCount} stages per rank): give {pieces} layer counts.", "balance");
        (options.Recomputation ?? throw new ArgumentNullException("recomputation", "Recomputation must not be null: use Recomputation.None.")).Check(layerCount, pieces);
        var devices = DeviceResolver.Resolve(options.Devices, schedule.RankCount);
        var forward = ScheduleGenerators.ForwardOnly(pieces, schedule.MicroBatchCount, schedule.StageToRank);

        var hosted = backend.HostedRanks(schedule.RankCount, options.Replicas);
        if (hosted.Count > schedule.RankCount && options.Replicas > 1 && !copiesModel)
            throw new ArgumentException(
                $"Replicas is {options.Replicas}, and in one process each replica needs its own copy of the model: use the constructor " +
                "that takes a model factory (Func<Sequential>), or run one process per rank (PipelineOptions.Backend).", "replicas");
        // Intra-op threads: this host's cores shared by the workers on it.
        int threads = options.ThreadsPerRank ?? Math.Max(1, Environment.ProcessorCount / (hosted.Count * backend.ProcessesOnThisHost));
        return new PipelinePlan(schedule, forward, balance, devices, options.Replicas, hosted, threads) { Recomputation = options.Recomputation };
    }

    /// <summary>Refuses a clipping bound that is not a positive finite number (null: no clipping).</summary>
    public static void CheckMaxGradNorm(double? maxGradNorm)
    {
        // NaN compares false with everything: without this, a NaN or infinite bound would quietly turn clipping off.
        if (maxGradNorm is { } maxNorm && !(maxNorm > 0 && double.IsFinite(maxNorm)))
            throw new ArgumentOutOfRangeException("maxGradNorm", maxNorm,
                $"MaxGradNorm must be a positive finite number (the largest global gradient norm), or null for no clipping; got {maxNorm}.");
    }

    private static int CheckPieces(int pieces, int layerCount, Schedule schedule)
    {
        if (pieces > layerCount)
        {
            int perRank = pieces / schedule.RankCount;
            throw new ArgumentOutOfRangeException("ranks", schedule.RankCount,
                $"{schedule.RankCount} ranks{(perRank > 1 ? $" x {perRank} stages per rank" : "")} need {pieces} stages but the model has only " +
                $"{layerCount} layers: use at most {layerCount / perRank} ranks (each stage needs at least one layer).");
        }
        return pieces;
    }

    private static Schedule Generate(PipelineOptions options, int layerCount)
    {
        int perRank = ScheduleGenerators.StagesPerRank(options.Schedule, options.StagesPerRank);
        int ranks;
        if (options.Balance != null)
        {
            if (options.Balance.Count % perRank != 0)
                throw new ArgumentException(
                    $"balance has {options.Balance.Count} entries, which is not a multiple of the {perRank} stages per rank of schedule '{options.Schedule}'.",
                    "balance");
            ranks = options.Balance.Count / perRank;
            if (options.Ranks != null && options.Ranks != ranks)
                throw new ArgumentException(
                    $"ranks is {options.Ranks} but balance has {options.Balance.Count} entries ({ranks} ranks x {perRank} stages per rank): " +
                    "give one count per stage, or leave ranks unset.", "ranks");
        }
        else
        {
            ranks = options.Ranks ?? 1;
            if (ranks * perRank > layerCount)
                throw new ArgumentOutOfRangeException("ranks", ranks,
                    $"{ranks} ranks{(perRank > 1 ? $" x {perRank} stages per rank" : "")} but the model has only {layerCount} layers: " +
                    $"use at most {layerCount / perRank} ranks (each stage needs at least one layer).");
        }
        return ScheduleGenerators.Create(options.Schedule, ranks, options.MicroBatches, options.StagesPerRank, options.ScheduleCosts);
    }

    private static Schedule FromFile(PipelineOptions options)
    {
        if (options.StagesPerRank != null)
            throw new ArgumentException(
                $"StagesPerRank is set, but schedule file '{options.Schedule}' already fixes the placement of every stage: leave it unset.", "stagesPerRank");
        var schedule = ScheduleFile.Parse(File.ReadAllText(options.Schedule), options.Schedule);
        if (schedule.MicroBatchCount != options.MicroBatches)
            throw new ArgumentException(
                $"schedule file '{options.Schedule}' is for {schedule.MicroBatchCount} micro-batches but MicroBatches is {options.MicroBatches}: make them equal.",
                "microBatches");
        if (options.Ranks != null && options.Ranks != schedule.RankCount)
            throw new ArgumentException(
                $"schedule file '{options.Schedule}' has {schedule.RankCount} ranks but ranks is {options.Ranks}: make them equal or leave ranks unset.",
                "ranks");
        return schedule;
    }
}

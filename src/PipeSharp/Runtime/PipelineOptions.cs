using PipeSharp.Backends;

namespace PipeSharp.Runtime;

/// <summary>
/// How a <see cref="Pipeline"/> splits, places and schedules a model. Vocabulary: a <em>layer</em> is never cut; a
/// <em>stage</em> is a run of consecutive layers (a model piece); a <em>rank</em> is a worker (a thread, or a process
/// under MPI) that holds one or more stages; a <em>replica</em> is a copy of the whole pipeline.
/// </summary>
public sealed record PipelineOptions
{
    /// <summary>
    /// Number of pipeline ranks (workers) per replica, each on its own device. With <see cref="StagesPerRank"/> = v the
    /// model is cut into Ranks x v stages and each rank holds v of them. If <see cref="Balance"/> is null, the stages are
    /// split by <see cref="BalanceMode"/> (default: by parameter count). Default: the length of <see cref="Balance"/> divided by the stages per rank, or 1.
    /// </summary>
    public int? Ranks { get; init; }

    /// <summary>
    /// Stages held by each rank: only for the <c>interleaved</c> schedule (default 2); <c>zb-v</c> always uses 2 and the
    /// other schedules 1.
    /// </summary>
    public int? StagesPerRank { get; init; }

    /// <summary>
    /// Layers per stage, in model order (e.g. 2,2,2,2,2): Ranks x stages-per-rank entries that add up to the model's
    /// layer count.
    /// </summary>
    public IReadOnlyList<int>? Balance { get; init; }

    /// <summary>
    /// How the model is split when <see cref="Balance"/> is null: <see cref="Partitioning.BalanceMode.Parameters"/> (the
    /// default, by parameter count), <see cref="Partitioning.BalanceMode.Uniform"/> (equal layer counts),
    /// <see cref="Partitioning.BalanceMode.Time"/> (by each layer's measured time) or <see cref="Partitioning.BalanceMode.Auto"/>
    /// (the exact partitioner on the measured times with the ranks' placement, <see cref="DeviceSpeeds"/> and
    /// <see cref="MemoryPerDevice"/>). Time and Auto measure on <see cref="ProfileInput"/>. Whatever the split, training
    /// gives the same parameters.
    /// </summary>
    public Partitioning.BalanceMode BalanceMode { get; init; } = Partitioning.BalanceMode.Parameters;

    /// <summary>
    /// The speed factor of each rank's device, one per rank (1: the reference; 0.5: half as fast), for
    /// <see cref="Partitioning.BalanceMode.Auto"/>: a slower rank gets less work. Null: every rank 1.
    /// </summary>
    public IReadOnlyList<double>? DeviceSpeeds { get; init; }

    /// <summary>
    /// A batch like the training ones, for the balance modes that measure (<see cref="Partitioning.BalanceMode.Time"/>,
    /// <see cref="Partitioning.BalanceMode.Auto"/>): it is split like a training batch and each layer is run forward and
    /// backward on its first micro-batch (the model's buffers and the random generator are put back afterwards). The
    /// caller keeps and disposes it.
    /// </summary>
    public TorchSharp.torch.Tensor? ProfileInput { get; init; }

    /// <summary>
    /// The device of each rank (<c>cpu</c>, <c>cuda</c>, <c>cuda:N</c>): one name for all or one per rank.
    /// Default: every rank on the CPU.
    /// </summary>
    public IReadOnlyList<string>? Devices { get; init; }

    /// <summary>
    /// The names of the pipeline's inputs, for a model whose layers read several named tensors
    /// (<see cref="Boundaries.SetLayer"/>), e.g. <c>["ids", "pad"]</c>; pass them as a <see cref="Boundaries.TensorSet"/>
    /// to <see cref="Pipeline.TrainStep(Boundaries.TensorSet, TorchSharp.torch.Tensor, CancellationToken)"/>. Every
    /// tensor a layer reads must be one of these or be written by an earlier layer (checked before anything runs).
    /// Default: one input, <c>x</c>.
    /// </summary>
    public IReadOnlyList<string>? Inputs { get; init; }

    /// <summary>Number of micro-batches each batch is split into along dimension 0. Default 1.</summary>
    public int MicroBatches { get; init; } = 1;

    /// <summary>
    /// The schedule: a name from <see cref="Schedules.ScheduleGenerators.Names"/> (<c>gpipe</c>, <c>1f1b</c>,
    /// <c>interleaved</c>, <c>zb-h1</c>, <c>zb-v</c>) or the path of a schedule file (see
    /// <see cref="Schedules.ScheduleFile"/>). Default <c>1f1b</c>.
    /// </summary>
    public string Schedule { get; init; } = "1f1b";

    /// <summary>
    /// Expected costs of F, B, I and W, by which the zero-bubble generators (<c>zb-h1</c>, <c>zb-v</c>) order actions.
    /// Default: F = I = W. Measure them (e.g. from <see cref="Pipeline.LastStep"/>) for a tighter schedule.
    /// </summary>
    public Schedules.ActionCosts? ScheduleCosts { get; init; }

    /// <summary>
    /// If set, gradients are clipped before each optimizer step so that their global L2 norm, over every stage and
    /// counting each shared parameter once, is at most this value (as <c>clip_grad_norm_</c> does on one device).
    /// It must be a positive finite number: NaN, infinities, zero and negative values are refused.
    /// </summary>
    public double? MaxGradNorm { get; init; }

    /// <summary>
    /// What a training step does when its loss or its global gradient norm (over every stage and replica, computed
    /// every step, with or without clipping) is NaN or infinite: <see cref="NonFiniteGradientPolicy.Throw"/> (the
    /// default) throws a <see cref="NonFiniteGradientException"/> naming the step; <see cref="NonFiniteGradientPolicy.SkipStep"/>
    /// zeroes the gradients and takes no optimizer or scheduler step. Either way no parameter changes, and across
    /// processes every rank takes the same decision.
    /// </summary>
    public NonFiniteGradientPolicy NonFiniteGradients { get; init; } = NonFiniteGradientPolicy.Throw;

    /// <summary>
    /// Which activations a training forward keeps for its backward: <see cref="Runtime.Recomputation.None"/> (the default)
    /// keeps every layer's graph; <see cref="Runtime.Recomputation.Full"/> keeps only each stage's inputs and recomputes the
    /// stage's forward in its backward; <see cref="Runtime.Recomputation.Layers"/> and <see cref="Runtime.Recomputation.Stages"/>
    /// recompute chosen layers or stages. Works with every schedule; the trained parameters are the same.
    /// </summary>
    public Recomputation Recomputation { get; init; } = Recomputation.None;

    /// <summary>
    /// Number of replicas of the pipeline for data parallelism (default 1). Each takes 1/D of every batch (sizes differ
    /// by at most one sample); gradients are summed over the replicas, weighted so that a step equals one on the whole
    /// batch. In one process, replicas are groups of worker threads (use the constructor that takes a model factory);
    /// with a <see cref="Backend"/> of several processes, the processes are D groups of <see cref="Ranks"/>
    /// (process = replica x ranks + rank).
    /// </summary>
    public int Replicas { get; init; } = 1;

    /// <summary>
    /// The engine that runs the ranks and connects them, e.g. the MPI backend (one rank per process under mpirun,
    /// every process building the same model). Null (the default): every rank is a thread of this process.
    /// </summary>
    public IBackend? Backend { get; init; }

    /// <summary>
    /// Intra-op threads of each rank's worker. Default: the processor count divided by the number of ranks on this host,
    /// at least 1.
    /// </summary>
    public int? ThreadsPerRank { get; init; }

    /// <summary>
    /// Lets training stop after a step every rank agrees on: each <see cref="Pipeline.TrainStep(TorchSharp.torch.Tensor, TorchSharp.torch.Tensor, System.Threading.CancellationToken)"/> combines the ranks'
    /// requests and sets <see cref="StopRequest.Agreed"/> on all of them in the same step. Null (the default): no stops.
    /// </summary>
    public StopRequest? Stop { get; init; }

    /// <summary>
    /// The memory each rank's device may use, in bytes: one budget for every rank, or one per rank (parse text such as
    /// <c>2GB</c> or <c>2GB,1.5GB</c> with <see cref="Memory.MemorySize.ParseList"/>). Before the stages are built, the
    /// parameters, gradients and optimizer state of each rank are checked against it; before the first training step
    /// (or at <see cref="Pipeline.PredictMemory"/>) the whole predicted peak, activations included. A plan that does not
    /// fit is refused with a <see cref="Memory.MemoryBudgetExceededException"/> naming the rank, the bytes and what would
    /// fit. Null (the default): no budget.
    /// </summary>
    public IReadOnlyList<long>? MemoryPerDevice { get; init; }

    /// <summary>
    /// The seed of the keyed dropout masks (<see cref="Randomness.KeyedDropout"/>): with the training step, the layer
    /// and the sample index it decides every mask, so runs with dropout are the same for any layout. Default 0.
    /// </summary>
    public long DropoutSeed { get; init; }

    /// <summary>
    /// Deferred batch normalisation (as torchgpipe's <c>deferred_batch_norm</c>): the running mean, variance and
    /// <c>num_batches_tracked</c> of every BatchNorm are updated once per step from the statistics of all micro-batches
    /// of all replicas, so they equal those of single-device training on the whole batch. Each micro-batch is still
    /// normalised by its own statistics in training. Default false: updated once per micro-batch, as PyTorch does for
    /// every forward.
    /// </summary>
    public bool DeferredBatchNorm { get; init; }

    /// <summary>
    /// Automatic rebalancing: layers move between ranks while training when one rank is slower than the others (see
    /// <see cref="RebalancingOptions"/>). Null (the default): the balance changes only when
    /// <see cref="Pipeline.Rebalance"/> is called.
    /// </summary>
    public RebalancingOptions? Rebalancing { get; init; }

    /// <summary>Old name of <see cref="Ranks"/>.</summary>
    [Obsolete("use Ranks (pipeline ranks per replica); Stages will be removed in the next release.")]
    public int? Stages { get => Ranks; init => Ranks = value; }

    /// <summary>Old name of <see cref="StagesPerRank"/>.</summary>
    [Obsolete("use StagesPerRank; Chunks will be removed in the next release.")]
    public int? Chunks { get => StagesPerRank; init => StagesPerRank = value; }

    /// <summary>Old name of <see cref="Replicas"/>.</summary>
    [Obsolete("use Replicas; DataParallel will be removed in the next release.")]
    public int DataParallel { get => Replicas; init => Replicas = value; }

    /// <summary>Old name of <see cref="ThreadsPerRank"/>.</summary>
    [Obsolete("use ThreadsPerRank; ThreadsPerStage will be removed in the next release.")]
    public int? ThreadsPerStage { get => ThreadsPerRank; init => ThreadsPerRank = value; }

    /// <summary>Old name of <see cref="Backend"/>.</summary>
    [Obsolete("use Backend; Cluster will be removed in the next release.")]
    public IBackend? Cluster { get => Backend; init => Backend = value; }
}

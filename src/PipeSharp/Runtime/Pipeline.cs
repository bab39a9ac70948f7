using System.Diagnostics;
using PipeSharp.Backends;
using PipeSharp.Boundaries;
using PipeSharp.Construction;
using PipeSharp.InProcess;
using PipeSharp.Native;
using PipeSharp.Partitioning;
using PipeSharp.Schedules;
using PipeSharp.Tracing;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Trains a model cut into consecutive stages that run at the same time on different micro-batches, each stage on
/// its rank's worker thread and device. A training step gives the same parameters as plain single-device training
/// on the whole batch (up to float round-off).
/// </summary>
/// <remarks>
/// With <see cref="PipelineOptions.Replicas"/> = D, D copies of the pipeline each take 1/D of every batch and their
/// gradients are summed before the step. With a <see cref="PipelineOptions.Backend"/> of several processes (MPI), each
/// process runs one rank of one replica (start <c>Ranks x Replicas</c> processes with mpirun); every process builds
/// the same model, passes the same batches, and gets the same loss back. The pipeline trains the model's own layers
/// in place; across processes it frees the parameters and buffers of the stages other processes train as soon as it
/// is built, so that each process holds only its share of the model: after that, use the model through the pipeline
/// (its state, checkpoints), not directly. A model given as a <see cref="ModelSpec"/> is never built whole: each
/// process builds only the layers of its own stages.
/// </remarks>
/// <example>
/// <code>
/// var model = nn.Sequential(("0", nn.Linear(32, 64)), ("1", nn.ReLU()), ("2", nn.Linear(64, 10)));
/// using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = "1f1b" },
///     loss: (output, target) => nn.functional.cross_entropy(output, target),
///     optimizer: parameters => optim.Adam(parameters, lr: 1e-3));
/// float loss = pipe.TrainStep(input, target);
/// </code>
/// </example>
public sealed partial class Pipeline : IDisposable
{
    private PipelinePlan _plan; // a move (Pipeline.Rebalance.cs) changes its balance, and makes the parts below again
    private readonly ReplicaRuntime[] _replicas;
    private ICollectives _collectives;
    private StepRunner _runner;
    private GradientReduction _gradients;
    private readonly BoundaryPlan _boundaries;
    private readonly PipelineMemory _memory;
    private DeferredBatchNorm? _batchNorm;
    private bool _disposed;

    /// <summary>Cuts <paramref name="model"/> into stages and starts one worker per rank.</summary>
    /// <param name="model">The model: its layers in order, cut between entries.</param>
    /// <param name="options">Ranks or balance, devices, micro-batches, schedule, threads, replicas, backend.</param>
    /// <param name="loss">
    /// The loss of one micro-batch, reduced by mean over its samples (like PyTorch's default); it runs on the last stage.
    /// </param>
    /// <param name="optimizer">Makes the optimizer of one stage from that stage's parameters.</param>
    /// <param name="scheduler">Optional: makes a learning-rate scheduler for a stage's optimizer; stepped after every optimizer step.</param>
    /// <exception cref="ArgumentException">An option is invalid; nothing has been started.</exception>
    public Pipeline(
        TorchSharp.Modules.Sequential model,
        PipelineOptions options,
        Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler = null)
        : this(ModelSource.Of(Model(model), null), options, loss, optimizer, scheduler)
    {
    }

    /// <summary>
    /// Like the constructor that takes a model, for replicas in one process: <paramref name="createModel"/> makes each
    /// replica's copy (replicas start from replica 0's values, so the copies need not be seeded alike).
    /// </summary>
    public Pipeline(
        Func<TorchSharp.Modules.Sequential> createModel,
        PipelineOptions options,
        Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler = null)
        : this(ModelSource.Of(Model((createModel ?? throw new ArgumentNullException(nameof(createModel)))()), () => Model(createModel())), options, loss, optimizer, scheduler)
    {
    }

    /// <summary>Cuts an ordered list of layers into stages; see the other constructors.</summary>
    public Pipeline(
        IReadOnlyList<nn.Module<Tensor, Tensor>> layers,
        PipelineOptions options,
        Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler = null)
        : this(ModelSource.Of(new ModelLayers(layers ?? throw new ArgumentNullException(nameof(layers)), null), null), options, loss, optimizer, scheduler)
    {
    }

    /// <summary>
    /// Builds a model from its spec, stage by stage: this process builds only the layers of the stages it holds, each
    /// on its rank's device and under its own seed (<see cref="ModelSpec.LayerSeed"/>), so no process allocates another
    /// rank's parameters and the initial model is the same for every layout. Tied parameters in different stages get a
    /// copy each, kept identical. Otherwise as the constructor that takes a built model; replicas in one process each
    /// build their own copy.
    /// </summary>
    /// <param name="model">The model's layers, seed and ties. Its layers map one tensor to one tensor.</param>
    /// <param name="options">Ranks or balance (automatic balancing uses <see cref="LayerSpec.Cost"/>), devices, micro-batches, schedule, threads, replicas, backend.</param>
    /// <param name="loss">The loss of one micro-batch, reduced by mean over its samples; it runs on the last stage.</param>
    /// <param name="optimizer">Makes the optimizer of one stage from that stage's parameters.</param>
    /// <param name="scheduler">Optional: makes a learning-rate scheduler for a stage's optimizer.</param>
    /// <exception cref="ArgumentException">An option is invalid; nothing has been built.</exception>
    public Pipeline(
        ModelSpec model,
        PipelineOptions options,
        Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler = null)
        : this(ModelSource.Of(model ?? throw new ArgumentNullException(nameof(model))), options, loss, optimizer, scheduler)
    {
    }

    private static ModelLayers Model(TorchSharp.Modules.Sequential model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return new ModelLayers(ModelSplitter.PipelineLayers(model), ModelSplitter.LayerNames(model));
    }

    private Pipeline(
        ModelSource source,
        PipelineOptions options,
        Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler)
    {
        TorchNative.EnsureLoaded();
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loss);
        ArgumentNullException.ThrowIfNull(optimizer);
        Backend = options.Backend ?? new InProcessBackend();
        options.Rebalancing?.Check();
        _memory = new PipelineMemory(options, source);
        _plan = PipelinePlan.Create(options, source.LayerCount, source.Costs, Backend, copiesModel: source.CopiesModel,
            schedule => BalanceSelection.Choose(options, schedule, source, Backend, () => PipelineMemory.Probe(optimizer).Factor));
        _memory.CheckBeforeBuild(_plan, optimizer); // before any stage is built or worker started
        _boundaries = BoundaryPlan.Create(source.Signatures(), source.Names, _plan.Balance, options.Inputs);
        if (!_boundaries.IsPlain) ScheduleValidator.Validate(Schedule, _boundaries.Links); // skips add messages between far stages
        Options = options;
        if (options.Rebalancing is { Enabled: true } && !_plan.HostsAll && !source.BuildsLayers) throw LayerMover.CannotMoveAcrossProcesses();
        if (options.Rebalancing is { Enabled: true } && !_boundaries.IsPlain)
            throw new NotSupportedException("PipelineOptions.Rebalancing: layers that pass several named tensors cannot move yet; leave Rebalancing unset.");
        // Measured against layer costs taken now: across processes a built model's other stages are freed once built.
        var trigger = options.Rebalancing is { Enabled: true } rebalancing ? new RebalanceTrigger(rebalancing, source.Costs()) : null;
        var built = RuntimeBuilder.Build(_plan, _boundaries, source, Backend, loss, optimizer, scheduler);
        _replicas = built.Replicas;
        _mover = new Mover(source, built.Workers, optimizer, scheduler, trigger);
        StageStateNames = built.StageStateNames;
        LayerNames = source.Names;
        try
        {
            _collectives = _plan.HostsAll
                ? new LocalCollectives(_replicas)
                : new CrossProcessCollectives(Backend, _replicas[0], _plan.Ranks, _plan.Replicas);
            _collectives.MatchReplicas();
        }
        catch
        {
            foreach (var (_, _, w) in built.Workers) w.Dispose();
            foreach (var r in _replicas) r.Dispose();
            throw;
        }
        _runner = new StepRunner(_plan, _replicas, built.Workers, Backend, _collectives);
        _gradients = new GradientReduction(_runner, _collectives, _replicas, Schedule.StageCount);
        if (options.DeferredBatchNorm) _batchNorm = new DeferredBatchNorm(_replicas, Schedule.StageCount);
    }

    /// <summary>The options the pipeline was made with.</summary>
    public PipelineOptions Options { get; }

    /// <summary>Layers per stage, in model order.</summary>
    public IReadOnlyList<int> Balance => _plan.Balance;

    /// <summary>The training schedule (validated): each rank's actions and the stage-to-rank placement.</summary>
    public Schedule Schedule => _plan.Schedule;

    /// <summary>
    /// The stages held by this process, in model order (all of them, unless the backend runs ranks in several
    /// processes); each is a module holding its layers on its rank's device. <see cref="StageModule.Index"/> is the stage's place in the model.
    /// </summary>
    public IReadOnlyList<StageModule> Stages => LocalStages.Select(s => s.Module).ToList();

    /// <summary>The device of each stage in <see cref="Stages"/>.</summary>
    public IReadOnlyList<Device> Devices => LocalStages.Select(s => s.Device).ToList();

    /// <summary>
    /// Parameters used by several stages (e.g. a tied embedding), one line per parameter naming its copies. Each stage
    /// holds its own copy; their gradients are summed before every step so the copies stay identical.
    /// </summary>
    public IReadOnlyList<string> SharedParameterNames => _replicas[0].Shared.Groups.Select(g => g.Name).ToList();

    /// <summary>
    /// Training steps taken (each <see cref="TrainStep(Tensor, Tensor, CancellationToken)"/> call counts, a skipped one
    /// too). The dropout masks of the next step are keyed by it (<see cref="Randomness.DropoutContext"/>): set it when
    /// resuming from a checkpoint, so the resumed run draws the masks of an uninterrupted one.
    /// </summary>
    public long TrainingSteps
    {
        get => _trainingSteps;
        set => _trainingSteps = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "the number of steps taken cannot be negative.");
    }

    private long _trainingSteps;

    /// <summary>Timings of the last <see cref="TrainStep(Tensor, Tensor, CancellationToken)"/>.</summary>
    public StepStatistics? LastStep { get; private set; }

    /// <summary>Timings of the last <see cref="Forward(Tensor, CancellationToken)"/> (kept apart, so evaluation does not hide the training step's).</summary>
    public StepStatistics? LastForward { get; private set; }

    /// <summary>The backend the ranks run on (the in-process one unless <see cref="PipelineOptions.Backend"/> is set).</summary>
    internal IBackend Backend { get; }

    /// <summary>The plan the pipeline runs.</summary>
    internal PipelinePlan Plan => _plan;

    /// <summary>The replicas held by this process.</summary>
    internal IReadOnlyList<ReplicaRuntime> Replicas => _replicas;

    /// <summary>
    /// The names of every stage's parameters and buffers: of all stages for a built model, of the stages held here
    /// for a spec (null for the others, which this process never built).
    /// </summary>
    internal IReadOnlyList<IReadOnlyList<string>?> StageStateNames { get; private set; }

    /// <summary>The layers' names in the model (null: numbered), to tell which layer a state name belongs to.</summary>
    internal IReadOnlyList<string>? LayerNames { get; }

    /// <summary>The stages of the first replica held here: what the state, <see cref="Stages"/> and the statistics show.</summary>
    internal IEnumerable<StageRuntime> LocalStages => _replicas[0].Local;

    /// <summary>Number of worker threads still running (0 after <see cref="Dispose"/>).</summary>
    internal int LiveWorkerThreads => _runner.LiveWorkerThreads;

    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>
    /// The largest difference between the copies of any shared parameter: 0 while they are in sync. Across processes
    /// every process must call it (the copies are compared across them).
    /// </summary>
    public double SharedParameterDrift() => _collectives.SharedCopyDifference();

    /// <summary>Sets the learning rate of every stage's optimizer (all parameter groups), e.g. from a schedule.</summary>
    public void SetLearningRate(double learningRate)
    {
        if (learningRate < 0 || double.IsNaN(learningRate))
            throw new ArgumentOutOfRangeException(nameof(learningRate), learningRate, "the learning rate must be a non-negative number.");
        foreach (var r in _replicas)
            foreach (var s in r.Local)
                foreach (var group in s.Optimizer.ParamGroups) group.LearningRate = learningRate;
    }

    /// <summary>
    /// One training step on a batch: forward and backward of every micro-batch as the schedule orders them,
    /// gradients accumulated over the micro-batches (and summed over replicas, each of which takes its share of the
    /// batch), then one optimizer step on every stage.
    /// </summary>
    /// <param name="input">The batch; dimension 0 is split among replicas, then into micro-batches. Across processes, every process passes the same batch.</param>
    /// <param name="target">The targets, split the same way; they reach the loss on the last stage.</param>
    /// <param name="cancellation">Stops the step (every rank) when cancelled.</param>
    /// <returns>
    /// The loss of the whole batch (the mean over its samples). If a rank has asked to stop (<see cref="PipelineOptions.Stop"/>),
    /// the step is completed and <see cref="StopRequest.Agreed"/> is set, on every rank in the same step.
    /// </returns>
    /// <exception cref="PipelineStageException">A stage failed; all ranks were stopped and no parameter changed.</exception>
    /// <exception cref="NonFiniteGradientException">
    /// The loss or the global gradient norm was NaN or infinite (with the default <see cref="PipelineOptions.NonFiniteGradients"/>);
    /// no optimizer step was taken, and the pipeline can take the next step.
    /// </exception>
    /// <exception cref="RankFailedException">Another process failed or was lost; this pipeline cannot be used again.</exception>
    public float TrainStep(Tensor input, Tensor target, CancellationToken cancellation = default)
    {
        ThrowIfUnusable();
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(target);
        if (target.dim() == 0 || target.shape[0] != (input.dim() == 0 ? -1 : input.shape[0]))
            throw new ArgumentException(
                $"target has shape [{string.Join(",", target.shape)}] but input has shape [{string.Join(",", input.shape)}]: " +
                "both need the same number of samples in dimension 0.", nameof(target));
        return TrainStep(PipelineInputs.Single(input, _boundaries), target, cancellation, nameof(input));
    }

    /// <summary>
    /// A training step on a batch of several named tensors (<see cref="PipelineOptions.Inputs"/>), e.g. token ids and a
    /// padding mask: each is split along dimension 0 like a single input; otherwise as <see cref="TrainStep(Tensor, Tensor, CancellationToken)"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The set does not hold exactly the declared inputs, or their sample counts differ.</exception>
    public float TrainStep(TensorSet inputs, Tensor target, CancellationToken cancellation = default) =>
        TrainStep(inputs, target, cancellation, nameof(inputs));

    private float TrainStep(TensorSet inputs, Tensor target, CancellationToken cancellation, string parameterName)
    {
        ThrowIfUnusable();
        ArgumentNullException.ThrowIfNull(target);
        long samples = PipelineInputs.Check(inputs, target, _boundaries, parameterName);
        // With a budget, the first step measures and checks the whole prediction before it trains.
        if (_memory.Budgets is not null && _memory.Prediction is null && _boundaries.IsPlain && inputs.Count == 1)
            PredictMemory(inputs.Values.First());
        using var step = NewStep(Schedule, inputs, samples, target, cancellation, parameterName);
        step.Peak = _memory.NewPeak();
        step.TrainingStep = _trainingSteps;
        step.DropoutSeed = Options.DropoutSeed;
        long number = ++_trainingSteps; // this call's number, for messages
        _batchNorm?.Begin();
        _runner.RunActions(step, before: (replica, rank) =>
        {
            foreach (var s in replica.StagesOf(rank)) s.Optimizer.zero_grad();
        });
        if (_batchNorm is { } batchNorm) _runner.Collective(step, () => batchNorm.Commit(v => _collectives.SumOverProcesses(v, step.Cancellation)));
        var reduced = _gradients.Reduce(step, Options.MaxGradNorm, Options.Stop?.Code ?? 0);
        if (reduced.Skip && Options.NonFiniteGradients == NonFiniteGradientPolicy.Throw)
            throw new NonFiniteGradientException(number, reduced.Loss, reduced.GradientNorm); // nothing stepped; the pipeline can go on
        StepOptimizers(step, reduced);
        double[] busy = step.StageBusy;
        // After the optimizer step only a failure of another process stops this exchange: the step is complete here.
        _runner.Collective(step, () => busy = _collectives.StageBusy(step, Backend.FailureToken), untilDone: true);
        LastStep = step.Statistics(busy, reduced.Skip, _memory.EndStep(step.Peak), _memory.PredictedForThisProcess(_plan));
        Options.Stop?.Agree(reduced.Stop); // the step is complete on every rank: all of them stop after it
        RebalanceIfSlow(); // with PipelineOptions.Rebalancing: layers may move before the next step
        return (float)reduced.Loss;
    }

    // The optimizer (and scheduler) step of every stage held here, after its gradients are clipped; a skipped step
    // zeroes the gradients instead. It runs to its end once started: a cancellation then takes effect at the next step.
    // Several workers stepping TorchSharp optimizers at once need collections held off (Native/CollectionPause).
    private void StepOptimizers(StepContext step, ReducedGradients reduced)
    {
        using var pause = Native.CollectionPause.Enter(when: _runner.WorkerCount > 1 && !reduced.Skip);
        _runner.RunOnWorkers(step, untilDone: true, work: (replica, rank) =>
        {
            foreach (var s in replica.StagesOf(rank))
            {
                if (reduced.Skip)
                {
                    s.Optimizer.zero_grad();
                    continue;
                }
                long t0 = Stopwatch.GetTimestamp();
                GradientReduction.Scale(s, reduced.ClipCoefficient);
                s.Optimizer.step();
                s.Scheduler?.step();
                if (replica.Index == step.TracedReplica)
                    lock (step.StageBusy) step.StageBusy[s.Module.Index] += step.Seconds(Stopwatch.GetTimestamp()) - step.Seconds(t0);
            }
        });
    }

    /// <summary>
    /// Measures each stage's memory: parameter bytes, and the native memory one micro-batch's forward keeps for the
    /// backward (a forward of the first micro-batch of <paramref name="sampleInput"/>, a whole training batch, through
    /// the pipeline, with the native heap read around each stage's forward), times the number of micro-batches the
    /// schedule holds at once. Call it between steps. Across processes every process calls it (with the same input),
    /// and every process gets the figures of all stages.
    /// </summary>
    public IReadOnlyList<StageMemory> MeasureMemory(Tensor sampleInput)
    {
        ThrowIfUnusable();
        ArgumentNullException.ThrowIfNull(sampleInput);
        if (!_boundaries.IsPlain)
            throw new NotSupportedException(
                "MeasureMemory measures models whose layers map one tensor to one tensor; this model's stages pass several named tensors.");
        return MemoryMeasurement.Measure(_plan, _runner, _replicas[0], Backend, sampleInput, Options.MicroBatches);
    }

    private StepContext NewStep(Schedule schedule, TensorSet inputs, long samples, Tensor? target, CancellationToken cancellation, string parameterName) =>
        StepInputs.Split(schedule, _plan.Replicas, _replicas.Select(r => r.Index), inputs, samples, target, cancellation, Backend.FailureToken, parameterName);

    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _runner.ThrowIfBroken();
    }

    /// <summary>Stops the worker threads and releases the optimizers and any tensors still held.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _runner.Dispose();
        _batchNorm?.Dispose();
        foreach (var r in _replicas) r.Dispose();
        _collectives.Dispose();
    }
}

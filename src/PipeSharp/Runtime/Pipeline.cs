using System.Diagnostics;
using PipeSharp.Mpi;
using PipeSharp.Native;
using PipeSharp.Partitioning;
using PipeSharp.Schedules;
using PipeSharp.Tracing;
using PipeSharp.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Trains a model split into consecutive stages that run at the same time on different micro-batches, each
/// stage on its own worker thread and device. A training step gives the same parameters as plain
/// single-device training on the whole batch (up to float round-off).
/// </summary>
/// <remarks>
/// With <see cref="PipelineOptions.DataParallel"/> = D, D copies of the pipeline each take 1/D of every batch and
/// their gradients are summed before the step. With <see cref="PipelineOptions.Cluster"/> set, each MPI process runs
/// one pipeline rank of one replica (start <c>Stages x DataParallel</c> processes with mpirun); every process builds
/// the same model, passes the same batches, and gets the same loss back. The pipeline trains the model's own
/// layers in place; with a cluster it frees the parameters and buffers of the stages other processes train as soon
/// as it is built, so that each process holds only its share of the model: after that, use the model through the
/// pipeline (<see cref="StateDict"/>, checkpoints), not directly.
/// </remarks>
/// <example>
/// <code>
/// var model = nn.Sequential(("0", nn.Linear(32, 64)), ("1", nn.ReLU()), ("2", nn.Linear(64, 10)));
/// using var pipe = new Pipeline(model, new PipelineOptions { Stages = 2, MicroBatches = 4, Schedule = "1f1b" },
///     loss: (output, target) => nn.functional.cross_entropy(output, target),
///     optimizer: parameters => optim.Adam(parameters, lr: 1e-3));
/// float loss = pipe.TrainStep(input, target);
/// </code>
/// </example>
public sealed partial class Pipeline : IDisposable
{
    private readonly ReplicaRuntime[] _replicas;
    private readonly (ReplicaRuntime Replica, int Rank, RankWorker Worker)[] _workers;
    private readonly ICollectives _collectives;
    private readonly Schedule _forwardSchedule;
    private readonly Dictionary<int, Schedule> _smallForwardSchedules = new();
    private readonly int[][] _gradientsDoneAfter;
    private readonly MpiCluster? _cluster;
    private readonly IReadOnlyList<IReadOnlyList<string>> _stageStateNames;
    private Exception? _broken;
    private long _trainSteps;
    private bool _disposed;

    /// <summary>Splits <paramref name="model"/> into stages and starts one worker per stage.</summary>
    /// <param name="model">The model: its layers in order, cut between entries.</param>
    /// <param name="options">Stages or balance, devices, micro-batches, schedule, threads, data parallelism, MPI cluster.</param>
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
        : this(Model(model), null, options, loss, optimizer, scheduler)
    {
    }

    /// <summary>
    /// Like the constructor that takes a model, for in-process data parallelism: <paramref name="createModel"/> makes
    /// each replica's copy (replicas start from replica 0's values, so the copies need not be seeded alike).
    /// </summary>
    public Pipeline(
        Func<TorchSharp.Modules.Sequential> createModel,
        PipelineOptions options,
        Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler = null)
        : this(Model((createModel ?? throw new ArgumentNullException(nameof(createModel)))()), () => Model(createModel()), options, loss, optimizer, scheduler)
    {
    }

    /// <summary>Splits an ordered list of layers into stages; see the other constructors.</summary>
    public Pipeline(
        IReadOnlyList<nn.Module<Tensor, Tensor>> layers,
        PipelineOptions options,
        Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler = null)
        : this((layers ?? throw new ArgumentNullException(nameof(layers)), null), null, options, loss, optimizer, scheduler)
    {
    }

    private static (IReadOnlyList<nn.Module<Tensor, Tensor>>, IReadOnlyList<string>?) Model(TorchSharp.Modules.Sequential model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return (ModelSplitter.Layers(model), ModelSplitter.LayerNames(model));
    }

    private Pipeline(
        (IReadOnlyList<nn.Module<Tensor, Tensor>> Layers, IReadOnlyList<string>? Names) first,
        Func<(IReadOnlyList<nn.Module<Tensor, Tensor>>, IReadOnlyList<string>?)>? another,
        PipelineOptions options,
        Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler)
    {
        TorchNative.EnsureLoaded();
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loss);
        ArgumentNullException.ThrowIfNull(optimizer);

        var plan = PipelinePlan.Create(options, first.Layers);
        Options = options;
        Schedule = plan.Schedule;
        Balance = plan.Balance;
        _forwardSchedule = plan.ForwardSchedule;
        _cluster = options.Cluster;
        int ranks = Schedule.RankCount, replicas = options.DataParallel;
        if (replicas < 1)
            throw new ArgumentOutOfRangeException("dataParallel", replicas, "DataParallel (the number of pipeline replicas) must be at least 1.");
        int localRank = -1;
        int[] localReplicas = Enumerable.Range(0, replicas).ToArray();
        if (_cluster != null)
        {
            if (_cluster.Size != ranks * replicas)
                throw new ArgumentException(
                    $"the MPI job has {_cluster.Size} processes but the pipeline needs {ranks} stages x {replicas} replicas = {ranks * replicas}: " +
                    $"start it with mpirun -np {ranks * replicas}, or change the stages or data-parallel count so that their product is {_cluster.Size}.", "cluster");
            localRank = _cluster.Rank % ranks;
            localReplicas = [_cluster.Rank / ranks];
        }
        else if (replicas > 1 && another == null)
        {
            throw new ArgumentException(
                $"DataParallel is {replicas}, and in one process each replica needs its own copy of the model: use the constructor " +
                "that takes a model factory (Func<Sequential>), or run one process per pipeline rank with MPI (PipelineOptions.Cluster).", "dataParallel");
        }

        int threads = options.ThreadsPerStage ?? DefaultThreads(ranks * localReplicas.Length);
        var built = new List<ReplicaRuntime>();
        var workers = new List<(ReplicaRuntime, int, RankWorker)>();
        IReadOnlyList<IReadOnlyList<string>>? stateNames = null;
        try
        {
            foreach (int d in localReplicas)
            {
                var (layers, names) = built.Count == 0 ? first : another!();
                var modules = ModelSplitter.Split(layers, plan.Balance, names);
                stateNames ??= modules.Select(m => (IReadOnlyList<string>)m.state_dict().Keys.ToList()).ToList();
                var untied = SharedParameters.Untie(modules);
                bool IsLocal(int s) => localRank < 0 || Schedule.StageToRank[s] == localRank;
                var stages = new StageRuntime?[modules.Count];
                for (int s = 0; s < modules.Count; s++)
                {
                    if (!IsLocal(s)) continue;
                    int rank = Schedule.StageToRank[s];
                    var device = plan.RankDevices[rank];
                    modules[s].to(device);
                    // A parameter used twice within a stage is stepped once.
                    var opt = optimizer(ParameterIdentity.Distinct(modules[s].parameters()));
                    stages[s] = new StageRuntime(modules[s], device, rank, opt, scheduler?.Invoke(opt));
                }
                if (localRank >= 0) ReleaseOtherStages(modules, IsLocal);
                var shared = localRank < 0 ? untied : untied.KeepLocal(IsLocal);
                ITransport transport = _cluster == null
                    ? new InProcessTransport()
                    : new MpiTransport(_cluster.Engine, modules.Count, options.MicroBatches * replicas,
                        key => d * ranks + Schedule.StageToRank[key.Stage]);
                var replica = new ReplicaRuntime(d, stages, shared, transport, new ActionRunner(d, stages, transport, loss));
                built.Add(replica);
                for (int r = 0; r < ranks; r++)
                    if (localRank < 0 || r == localRank) workers.Add((replica, r, new RankWorker(d * ranks + r, threads)));
            }
            _replicas = built.ToArray();
            _workers = workers.ToArray();
            _stageStateNames = stateNames!;
            if (_cluster != null)
            {
                var placement = Schedule.StageToRank;
                _cluster.Engine.RoleOf = r =>
                    $"replica {r / ranks}, stage {string.Join("+", Enumerable.Range(0, placement.Count).Where(s => placement[s] == r % ranks))}";
                _collectives = new MpiCollectives(_cluster, _replicas[0], (MpiTransport)_replicas[0].Transport, ranks, replicas);
            }
            else
            {
                _collectives = new LocalCollectives(_replicas);
            }
            _collectives.MatchReplicas();
        }
        catch
        {
            foreach (var (_, _, w) in workers) w.Dispose();
            foreach (var r in built) r.Dispose();
            throw;
        }
        _gradientsDoneAfter = GradientsDoneAfter(Schedule);
    }

    // With MPI this process trains only its own stages. The others' parameters and buffers are freed now: left to the
    // garbage collector, their native memory (which it does not see) could stay for the whole run, and every rank
    // would hold the whole model. A tensor the process's own stages also use is kept.
    private static void ReleaseOtherStages(IReadOnlyList<StageModule> modules, Func<int, bool> isLocal)
    {
        static IEnumerable<Tensor> Tensors(StageModule m) => m.parameters().Cast<Tensor>().Concat(m.buffers());
        var kept = modules.Where((_, s) => isLocal(s)).SelectMany(Tensors).Select(t => t.Handle).ToHashSet();
        for (int s = 0; s < modules.Count; s++)
        {
            if (isLocal(s)) continue;
            foreach (var t in Tensors(modules[s]).ToList())
                if (!kept.Contains(t.Handle)) t.Dispose();
        }
    }

    // Intra-op threads per worker: this host's cores shared by the workers on it (Hydra says how many ranks share it).
    private int DefaultThreads(int workersHere)
    {
        int processesHere = _cluster == null ? 1
            : int.TryParse(Environment.GetEnvironmentVariable("MPI_LOCALNRANKS"), out int n) && n > 0 ? n : _cluster.Size;
        return Math.Max(1, Environment.ProcessorCount / (workersHere * processesHere));
    }

    // For each rank's action list: the stage whose gradients are final after that action (its last B or W), or -1.
    private static int[][] GradientsDoneAfter(Schedule schedule)
    {
        var result = new int[schedule.RankCount][];
        for (int r = 0; r < schedule.RankCount; r++)
        {
            var list = schedule.RankActions[r];
            result[r] = Enumerable.Repeat(-1, list.Count).ToArray();
            var seen = new HashSet<int>();
            for (int i = list.Count - 1; i >= 0; i--)
                if (list[i].Kind is ActionKind.Backward or ActionKind.WeightGrad && seen.Add(list[i].Stage))
                    result[r][i] = list[i].Stage;
        }
        return result;
    }

    // The first replica held here: its stages are what StateDict, Stages and the statistics show.
    private StageRuntime?[] _stages => _replicas[0].Stages;

    private IEnumerable<StageRuntime> LocalStages => _replicas[0].Local;

    /// <summary>The options the pipeline was made with.</summary>
    public PipelineOptions Options { get; }

    /// <summary>Layers per model piece (one entry per stage, or per chunk with several chunks per stage).</summary>
    public IReadOnlyList<int> Balance { get; }

    /// <summary>The training schedule (validated).</summary>
    public Schedule Schedule { get; }

    /// <summary>
    /// The model pieces held by this process, in model order (all of them, unless <see cref="PipelineOptions.Cluster"/>
    /// is set); each is a module holding its layers on its stage's device. <see cref="StageModule.Index"/> is the piece's place in the model.
    /// </summary>
    public IReadOnlyList<StageModule> Stages => LocalStages.Select(s => s.Module).ToList();

    /// <summary>The device of each piece in <see cref="Stages"/>.</summary>
    public IReadOnlyList<Device> Devices => LocalStages.Select(s => s.Device).ToList();

    /// <summary>
    /// Parameters used by several stages (e.g. a tied embedding), one line per parameter naming its copies. Each stage
    /// holds its own copy; their gradients are summed before every step so the copies stay identical.
    /// </summary>
    public IReadOnlyList<string> SharedParameterNames => _replicas[0].Shared.Groups.Select(g => g.Name).ToList();

    /// <summary>
    /// The largest difference between the copies of any shared parameter: 0 while they are in sync. With an MPI
    /// cluster every rank must call it (the copies are compared across processes).
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

    /// <summary>The replicas held by this process.</summary>
    internal IReadOnlyList<ReplicaRuntime> Replicas => _replicas;

    /// <summary>Number of worker threads still running (0 after <see cref="Dispose"/>).</summary>
    internal int LiveWorkerThreads => _workers.Count(w => w.Worker.IsAlive);

    /// <summary>Timings of the last <see cref="TrainStep"/>.</summary>
    public StepStatistics? LastStep { get; private set; }

    /// <summary>Timings of the last <see cref="Forward"/> (kept apart, so evaluation does not hide the training step's).</summary>
    public StepStatistics? LastForward { get; private set; }

    /// <summary>
    /// One training step on a batch: forward and backward of every micro-batch as the schedule orders them,
    /// gradients accumulated over the micro-batches (and summed over data-parallel replicas, each of which takes its
    /// share of the batch), then one optimizer step on every stage.
    /// </summary>
    /// <param name="input">The batch; dimension 0 is split among replicas, then into micro-batches. With MPI, every rank passes the same batch.</param>
    /// <param name="target">The targets, split the same way; they reach the loss on the last stage.</param>
    /// <param name="cancellation">Stops the step (every stage) when cancelled.</param>
    /// <returns>
    /// The loss of the whole batch (the mean over its samples). If a rank has asked to stop (<see cref="PipelineOptions.Stop"/>),
    /// the step is completed and <see cref="StopRequest.Agreed"/> is set, on every rank in the same step.
    /// </returns>
    /// <exception cref="PipelineStageException">A stage failed; all stages were stopped and no parameter changed.</exception>
    /// <exception cref="NonFiniteGradientException">
    /// The loss or the global gradient norm was NaN or infinite (with the default <see cref="PipelineOptions.NonFiniteGradients"/>);
    /// no optimizer step was taken, and the pipeline can take the next step.
    /// </exception>
    /// <exception cref="RankFailedException">Another MPI process failed or was lost; this pipeline cannot be used again.</exception>
    public float TrainStep(Tensor input, Tensor target, CancellationToken cancellation = default)
    {
        ThrowIfUnusable();
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(target);
        if (target.dim() == 0 || target.shape[0] != (input.dim() == 0 ? -1 : input.shape[0]))
            throw new ArgumentException(
                $"target has shape [{string.Join(",", target.shape)}] but input has shape [{string.Join(",", input.shape)}]: " +
                "both need the same number of samples in dimension 0.", nameof(target));
        using var step = NewStep(Schedule, input, target, cancellation);
        long number = ++_trainSteps; // this call's number, for messages
        RunOnWorkers(step, (replica, rank) =>
        {
            foreach (var s in replica.StagesOf(rank)) s.Optimizer.zero_grad();
            RunActions(replica, rank, step);
        });
        double loss = 0, norm = 0;
        int stop = 0;
        Collective(step, () =>
        {
            _collectives.ReduceGradients(step.Cancellation);
            (loss, stop) = _collectives.TotalLoss(step, Options.Stop?.Code ?? 0, step.Cancellation);
            // Computed with or without clipping: the loss and the norm are global, so every rank decides alike.
            norm = GradientNorm(step);
            step.GradientNorm = Options.MaxGradNorm is null ? null : norm;
            if (Options.MaxGradNorm is { } maxNorm && double.IsFinite(norm) && double.IsFinite(loss)) Clip(step, maxNorm, norm);
        });
        bool skip = !double.IsFinite(norm) || !double.IsFinite(loss);
        if (skip && Options.NonFiniteGradients == NonFiniteGradientPolicy.Throw)
            throw new NonFiniteGradientException(number, loss, norm); // nothing stepped; the pipeline can go on
        RunOnWorkers(step, (replica, rank) =>
        {
            foreach (var s in replica.StagesOf(rank))
            {
                if (skip)
                {
                    s.Optimizer.zero_grad();
                    continue;
                }
                long t0 = Stopwatch.GetTimestamp();
                s.Optimizer.step();
                s.Scheduler?.step();
                if (replica.Index == step.TracedReplica)
                    lock (step.StageBusy) step.StageBusy[s.Module.Index] += step.Seconds(Stopwatch.GetTimestamp()) - step.Seconds(t0);
            }
        });
        double[] busy = step.StageBusy;
        Collective(step, () => busy = _collectives.StageBusy(step, step.Cancellation));
        LastStep = Statistics(step, busy, skip);
        Options.Stop?.Agree(stop); // the step is complete on every rank: all of them stop after it
        return (float)loss;
    }

    /// <summary>
    /// A pipelined forward pass without gradients and in evaluation mode (no dropout), for evaluation and inference.
    /// The batch is split into <see cref="PipelineOptions.MicroBatches"/> micro-batches, or into one per sample when it
    /// has fewer (so a single sequence can be continued with the training pipeline). Afterwards every module (each
    /// stage and each of its submodules) is back in the mode it was in before.
    /// </summary>
    /// <returns>The last stage's output for the whole batch, on the last stage's device (on the CPU, and on every rank, with MPI).</returns>
    public Tensor Forward(Tensor input, CancellationToken cancellation = default)
    {
        ThrowIfUnusable();
        ArgumentNullException.ThrowIfNull(input);
        using var step = NewStep(ForwardScheduleFor(input), input, null, cancellation);
        var modes = _replicas.SelectMany(r => r.Local).Select(s => TrainingModes(s.Module)).ToList();
        foreach (var s in _replicas.SelectMany(r => r.Local)) s.Module.eval(); // dropout off, as for any evaluation
        try
        {
            RunOnWorkers(step, (replica, rank) => RunActions(replica, rank, step));
            LastForward = Statistics(step, step.StageBusy);
            Tensor? output = null;
            Collective(step, () => output = _collectives.CollectOutputs(step, step.Cancellation));
            return output!;
        }
        finally
        {
            // train(bool) sets a module's whole subtree, so the modes are put back parents first (pre-order).
            foreach (var stage in modes)
                foreach (var (module, training) in stage) module.train(training);
        }
    }

    // The forward-only schedule for this batch: a batch with fewer samples per replica than MicroBatches (one
    // sequence when generating text) runs as that many micro-batches, so inference takes any batch size.
    private Schedule ForwardScheduleFor(Tensor input)
    {
        long perReplica = input.dim() > 0 ? input.shape[0] / Options.DataParallel : Options.MicroBatches;
        if (perReplica >= Options.MicroBatches || perReplica < 1) return _forwardSchedule;
        int m = (int)perReplica;
        lock (_smallForwardSchedules)
        {
            if (!_smallForwardSchedules.TryGetValue(m, out var schedule))
                _smallForwardSchedules[m] = schedule = ScheduleGenerators.ForwardOnly(Schedule.StageCount, m, Schedule.StageToRank);
            return schedule;
        }
    }

    // A module's training flag and its submodules', parents before their children.
    private static List<(nn.Module Module, bool Training)> TrainingModes(nn.Module root)
    {
        var modes = new List<(nn.Module, bool)>();
        void Visit(nn.Module m)
        {
            modes.Add((m, m.training));
            foreach (var child in m.children()) Visit(child);
        }
        Visit(root);
        return modes;
    }

    // Splits the batch among the replicas held here, then into the schedule's micro-batches; loss weights are shares
    // of the whole batch.
    private StepContext NewStep(Schedule schedule, Tensor input, Tensor? target, CancellationToken cancellation)
    {
        int replicas = Options.DataParallel, m = schedule.MicroBatchCount;
        if (input.dim() > 0 && input.shape[0] < (long)replicas * m && replicas > 1)
            throw new ArgumentException(
                $"input has {input.shape[0]} samples but each of the {replicas} data-parallel replicas splits its share into {m} micro-batches: " +
                $"use a batch of at least {replicas * m} samples, or fewer micro-batches or replicas.", nameof(input));
        var inputShares = replicas == 1 ? [input] : MicroBatches.Split(input, replicas, nameof(input));
        var targetShares = target is null ? null : replicas == 1 ? [target] : MicroBatches.Split(target, replicas, nameof(target));
        double total = input.shape[0];
        var steps = new ReplicaStep?[replicas];
        try
        {
            foreach (var r in _replicas)
            {
                var inputs = MicroBatches.Split(inputShares[r.Index], m, nameof(input));
                var targets = targetShares is null ? null : MicroBatches.Split(targetShares[r.Index], m, nameof(target));
                steps[r.Index] = new ReplicaStep(inputs, targets, inputs.Select(t => t.shape[0] / total).ToArray());
            }
        }
        catch
        {
            foreach (var s in steps) s?.Dispose();
            throw;
        }
        finally
        {
            if (replicas > 1)
            {
                foreach (var t in inputShares) t.Dispose();
                if (targetShares != null) foreach (var t in targetShares) t.Dispose();
            }
        }
        return new StepContext(schedule, steps, cancellation, _cluster?.FailureToken ?? default);
    }

    // The global gradient norm over all stages (each shared parameter once), the same on every rank: NaN or infinite
    // if any gradient is. Each parameter's norm in float32 (one pass, no copy of the gradient, as clip_grad_norm_
    // computes it on one device), squared and summed in float64. Summing the gradients' squares in float64 instead
    // cost 1.7 ms per step against 0.5 ms for the GPT of issue 11 (one thread, 52 tensors, 1.8M values).
    private double GradientNorm(StepContext step)
    {
        var squares = new double[Schedule.StageCount];
        var first = _replicas[0];
        RunOnWorkers(step, (replica, rank) =>
        {
            if (replica != first) return;
            foreach (var s in replica.StagesOf(rank))
            {
                using var scope = torch.NewDisposeScope();
                var grads = s.Optimizer.parameters().Where(p => p.grad is not null && !replica.Shared.IsSecondaryCopy(p)).Select(p => p.grad!);
                var sums = grads.Select(g => torch.linalg.vector_norm(g).to_type(ScalarType.Float64).square()).ToArray();
                squares[s.Module.Index] = sums.Length == 0 ? 0 : torch.stack(sums).sum().item<double>(); // one read-back per stage
            }
        });
        return Math.Sqrt(_collectives.SumOverStages(squares, step.Cancellation));
    }

    // Every gradient scaled by min(1, max / norm), as torch.nn.utils.clip_grad_norm_ computes it on one device.
    private void Clip(StepContext step, double maxNorm, double norm)
    {
        double coefficient = maxNorm / (norm + 1e-6);
        if (coefficient < 1)
        {
            RunOnWorkers(step, (replica, rank) =>
            {
                using var noGrad = torch.no_grad();
                foreach (var s in replica.StagesOf(rank))
                    foreach (var p in s.Optimizer.parameters())
                        p.grad?.mul_(coefficient);
            });
        }
    }

    private void RunActions(ReplicaRuntime replica, int rank, StepContext step)
    {
        var actions = step.Schedule.RankActions[rank];
        int worldRank = replica.Index * Schedule.RankCount + rank;
        for (int index = 0; index < actions.Count; index++)
        {
            var action = actions[index];
            step.Cancellation.ThrowIfCancellationRequested();
            long start;
            try
            {
                // The action's time starts when its inputs have arrived: waiting is idle time, not work.
                start = replica.Runner.Run(action, step);
            }
            catch (OperationCanceledException) when (step.Cancellation.IsCancellationRequested)
            {
                throw;
            }
            catch (RankFailedException e)
            {
                step.Fail(e);
                throw;
            }
            catch (Exception e)
            {
                var failure = new PipelineStageException(action, e);
                step.Fail(failure);
                throw failure;
            }
            if (replica.Index == step.TracedReplica) step.Record(worldRank, action, start, Stopwatch.GetTimestamp());
            if (step.Training && _gradientsDoneAfter[rank][index] is var done and >= 0)
                _collectives.StageGradientsReady(replica, replica.Stages[done]!);
        }
    }

    // Runs work on every worker and waits for all of them. The first failure cancels the others; the caller gets
    // the stage's exception, or OperationCanceledException if the caller cancelled.
    private void RunOnWorkers(StepContext step, Action<ReplicaRuntime, int> work)
    {
        var tasks = new Task[_workers.Length];
        for (int w = 0; w < _workers.Length; w++)
        {
            var (replica, rank, worker) = _workers[w];
            tasks[w] = worker.Run(() =>
            {
                try { work(replica, rank); }
                catch (Exception e) when (e is not OperationCanceledException) { step.Fail(e); throw; }
            });
        }
        try
        {
            Task.WaitAll(tasks);
        }
        catch (AggregateException)
        {
            // Reported below, after cleaning up.
        }
        if (step.Failure is not null || step.Cancellation.IsCancellationRequested) Stop(step);
    }

    // Runs a collective part of the step on this thread; a failure stops the step like a worker's.
    private void Collective(StepContext step, Action work)
    {
        try
        {
            work();
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            step.Fail(e);
        }
        catch (OperationCanceledException)
        {
        }
        if (step.Failure is not null || step.Cancellation.IsCancellationRequested) Stop(step);
    }

    // Cleans up a failed or cancelled step and throws. Across processes the others are told, and this pipeline is
    // done: its ranks no longer agree on where they are.
    private void Stop(StepContext step)
    {
        foreach (var r in _replicas)
        {
            foreach (var s in r.Local) s.DropSaved();
            r.Transport.Clear();
        }
        Exception failure = step.Failure
            ?? (_cluster?.Failure switch
            {
                RankFailedException lost => (Exception)new RankFailedException(lost.Rank, lost.Message),
                { } other => new MpiException(other.Message, other),
                null => null,
            })
            ?? (Exception)new OperationCanceledException("The pipeline step was cancelled; no parameter was changed.", step.Cancellation);
        if (_cluster != null)
        {
            _broken = failure;
            _collectives.ReportFailure(failure is OperationCanceledException ? new OperationCanceledException("the step was cancelled") : failure);
        }
        throw failure;
    }

    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_broken != null)
            throw new InvalidOperationException(
                $"this pipeline stopped after a failure across MPI processes ({_broken.Message}); its ranks cannot continue: end the process " +
                "and resume from the last checkpoint.", _broken);
    }

    // With MPI the timeline and messages are this process's own; the busy times are every stage's.
    private static StepStatistics Statistics(StepContext step, double[] stageBusy, bool skipped = false)
    {
        double wall = step.Seconds(Stopwatch.GetTimestamp());
        var timeline = step.Timeline.OrderBy(t => t.Rank).ThenBy(t => t.Start).ToList();
        return new StepStatistics(wall, stageBusy.ToArray(), timeline, step.GradientNorm, step.Messages.OrderBy(m => m.SendTime).ToList(), skipped);
    }

    /// <summary>Stops the worker threads and releases the optimizers and any tensors still held.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var (_, _, w) in _workers) w.Dispose();
        foreach (var r in _replicas) r.Dispose();
        _collectives.Dispose();
    }
}

using System.Diagnostics;
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
    private readonly StageRuntime[] _stages;
    private readonly RankWorker[] _workers;
    private readonly ITransport _transport;
    private readonly ActionRunner _runner;
    private readonly Schedule _forwardSchedule;
    private readonly SharedParameters _shared;
    private bool _disposed;

    /// <summary>Splits <paramref name="model"/> into stages and starts one worker per stage.</summary>
    /// <param name="model">The model: its layers in order, cut between entries.</param>
    /// <param name="options">Stages or balance, devices, micro-batches, schedule, threads.</param>
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
        : this(ModelSplitter.Layers(model), options, loss, optimizer, scheduler, ModelSplitter.LayerNames(model))
    {
    }

    /// <summary>Splits an ordered list of layers into stages; see the other constructor.</summary>
    public Pipeline(
        IReadOnlyList<nn.Module<Tensor, Tensor>> layers,
        PipelineOptions options,
        Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler = null)
        : this(layers, options, loss, optimizer, scheduler, null)
    {
    }

    private Pipeline(
        IReadOnlyList<nn.Module<Tensor, Tensor>> layers,
        PipelineOptions options,
        Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler,
        IReadOnlyList<string>? layerNames)
    {
        TorchNative.EnsureLoaded();
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loss);
        ArgumentNullException.ThrowIfNull(optimizer);

        var plan = PipelinePlan.Create(options, layers);
        Options = options;
        Schedule = plan.Schedule;
        Balance = plan.Balance;
        _forwardSchedule = plan.ForwardSchedule;

        if (options.MaxGradNorm is <= 0)
            throw new ArgumentOutOfRangeException("maxGradNorm", options.MaxGradNorm, "MaxGradNorm must be positive, or null for no clipping.");
        var modules = ModelSplitter.Split(layers, plan.Balance, layerNames);
        _shared = SharedParameters.Untie(modules);
        _stages = new StageRuntime[modules.Count];
        for (int s = 0; s < modules.Count; s++)
        {
            int rank = Schedule.StageToRank[s];
            var device = plan.RankDevices[rank];
            modules[s].to(device);
            // A parameter used twice within a stage is stepped once.
            var opt = optimizer(ParameterIdentity.Distinct(modules[s].parameters()));
            _stages[s] = new StageRuntime(modules[s], device, rank, opt, scheduler?.Invoke(opt));
        }
        _transport = new InProcessTransport();
        _runner = new ActionRunner(_stages, _transport, loss);
        int threads = options.ThreadsPerStage ?? Math.Max(1, Environment.ProcessorCount / Schedule.RankCount);
        _workers = Enumerable.Range(0, Schedule.RankCount).Select(r => new RankWorker(r, threads)).ToArray();
    }

    /// <summary>The options the pipeline was made with.</summary>
    public PipelineOptions Options { get; }

    /// <summary>Layers per model piece (one entry per stage, or per chunk with several chunks per stage).</summary>
    public IReadOnlyList<int> Balance { get; }

    /// <summary>The training schedule (validated).</summary>
    public Schedule Schedule { get; }

    /// <summary>The model pieces, in model order; each is a module holding its layers on its stage's device.</summary>
    public IReadOnlyList<StageModule> Stages => _stages.Select(s => s.Module).ToList();

    /// <summary>The device of each model piece.</summary>
    public IReadOnlyList<Device> Devices => _stages.Select(s => s.Device).ToList();

    /// <summary>
    /// Parameters used by several stages (e.g. a tied embedding), one line per parameter naming its copies. Each stage
    /// holds its own copy; their gradients are summed before every step so the copies stay identical.
    /// </summary>
    public IReadOnlyList<string> SharedParameterNames => _shared.Groups.Select(g => g.Name).ToList();

    /// <summary>The largest difference between the copies of any shared parameter: 0 while they are in sync.</summary>
    public double SharedParameterDrift() => _shared.MaxCopyDifference();

    /// <summary>Sets the learning rate of every stage's optimizer (all parameter groups), e.g. from a schedule.</summary>
    public void SetLearningRate(double learningRate)
    {
        if (learningRate < 0 || double.IsNaN(learningRate))
            throw new ArgumentOutOfRangeException(nameof(learningRate), learningRate, "the learning rate must be a non-negative number.");
        foreach (var s in _stages)
            foreach (var group in s.Optimizer.ParamGroups) group.LearningRate = learningRate;
    }

    /// <summary>Number of worker threads still running (0 after <see cref="Dispose"/>).</summary>
    internal int LiveWorkerThreads => _workers.Count(w => w.IsAlive);

    /// <summary>Timings of the last <see cref="TrainStep"/>.</summary>
    public StepStatistics? LastStep { get; private set; }

    /// <summary>Timings of the last <see cref="Forward"/> (kept apart, so evaluation does not hide the training step's).</summary>
    public StepStatistics? LastForward { get; private set; }

    /// <summary>
    /// One training step on a batch: forward and backward of every micro-batch as the schedule orders them,
    /// gradients accumulated over the micro-batches, then one optimizer step on every stage.
    /// </summary>
    /// <param name="input">The batch; dimension 0 is split into micro-batches.</param>
    /// <param name="target">The targets, split the same way; they reach the loss on the last stage.</param>
    /// <param name="cancellation">Stops the step (every stage) when cancelled.</param>
    /// <returns>The loss of the whole batch (the mean over its samples).</returns>
    /// <exception cref="PipelineStageException">A stage failed; all stages were stopped and no parameter changed.</exception>
    public float TrainStep(Tensor input, Tensor target, CancellationToken cancellation = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(target);
        if (target.dim() == 0 || target.shape[0] != (input.dim() == 0 ? -1 : input.shape[0]))
            throw new ArgumentException(
                $"target has shape [{string.Join(",", target.shape)}] but input has shape [{string.Join(",", input.shape)}]: " +
                "both need the same number of samples in dimension 0.", nameof(target));
        var inputs = MicroBatches.Split(input, Options.MicroBatches, nameof(input));
        var targets = MicroBatches.Split(target, Options.MicroBatches, nameof(target));
        using var step = new StepContext(Schedule, inputs, targets, MicroBatches.MeanWeights(inputs), cancellation);
        try
        {
            RunOnRanks(step, rank =>
            {
                foreach (var s in StagesOf(rank)) s.Optimizer.zero_grad();
                RunActions(rank, step);
            });
            _shared.SynchroniseGradients();
            double? norm = Options.MaxGradNorm is { } maxNorm ? ClipGradients(step, maxNorm) : null;
            step.GradientNorm = norm;
            RunOnRanks(step, rank =>
            {
                foreach (var s in StagesOf(rank))
                {
                    long t0 = Stopwatch.GetTimestamp();
                    s.Optimizer.step();
                    s.Scheduler?.step();
                    lock (step.StageBusy) step.StageBusy[s.Module.Index] += step.Seconds(Stopwatch.GetTimestamp()) - step.Seconds(t0);
                }
            });
            LastStep = Statistics(step);
            return (float)step.Loss;
        }
        finally
        {
            foreach (var t in inputs.Concat(targets)) t.Dispose();
        }
    }

    /// <summary>
    /// A pipelined forward pass without gradients and in evaluation mode (no dropout), for evaluation and inference.
    /// </summary>
    /// <returns>The last stage's output for the whole batch, on the last stage's device.</returns>
    public Tensor Forward(Tensor input, CancellationToken cancellation = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(input);
        var inputs = MicroBatches.Split(input, Options.MicroBatches, nameof(input));
        using var step = new StepContext(_forwardSchedule, inputs, null, MicroBatches.MeanWeights(inputs), cancellation);
        foreach (var s in _stages) s.Module.eval(); // dropout off, as for any evaluation
        try
        {
            RunOnRanks(step, rank => RunActions(rank, step));
            LastForward = Statistics(step);
            return torch.cat(step.Outputs.Select(o => o!).ToArray(), 0);
        }
        finally
        {
            foreach (var s in _stages) s.Module.train();
            foreach (var t in inputs) t.Dispose();
        }
    }

    // The global gradient norm over all stages (each shared parameter once), then every gradient scaled by
    // min(1, max / norm), as torch.nn.utils.clip_grad_norm_ computes it on one device.
    private double ClipGradients(StepContext step, double maxNorm)
    {
        var squares = new double[_stages.Length];
        RunOnRanks(step, rank =>
        {
            foreach (var s in StagesOf(rank))
            {
                using var scope = torch.NewDisposeScope();
                var sums = s.Optimizer.parameters()
                    .Where(p => p.grad is not null && !_shared.IsSecondaryCopy(p))
                    .Select(p => p.grad!.to_type(ScalarType.Float64).square().sum()).ToArray();
                squares[s.Module.Index] = sums.Length == 0 ? 0 : torch.stack(sums).sum().item<double>(); // one read-back per stage
            }
        });
        double norm = Math.Sqrt(squares.Sum());
        double coefficient = maxNorm / (norm + 1e-6);
        if (coefficient < 1)
        {
            RunOnRanks(step, rank =>
            {
                using var noGrad = torch.no_grad();
                foreach (var s in StagesOf(rank))
                    foreach (var p in s.Optimizer.parameters())
                        p.grad?.mul_(coefficient);
            });
        }
        return norm;
    }

    private IEnumerable<StageRuntime> StagesOf(int rank) => _stages.Where(s => s.Rank == rank);

    private void RunActions(int rank, StepContext step)
    {
        foreach (var action in step.Schedule.RankActions[rank])
        {
            step.Cancellation.ThrowIfCancellationRequested();
            long start;
            try
            {
                // The action's time starts when its inputs have arrived: waiting is idle time, not work.
                start = _runner.Run(action, step);
            }
            catch (OperationCanceledException) when (step.Cancellation.IsCancellationRequested)
            {
                throw;
            }
            catch (Exception e)
            {
                var failure = new PipelineStageException(action, e);
                step.Fail(failure);
                throw failure;
            }
            step.Record(rank, action, start, Stopwatch.GetTimestamp());
        }
    }

    // Runs work on every rank and waits for all of them. The first failure cancels the others; the caller gets
    // the stage's exception, or OperationCanceledException if the caller cancelled.
    private void RunOnRanks(StepContext step, Action<int> work)
    {
        var tasks = new Task[_workers.Length];
        for (int r = 0; r < _workers.Length; r++)
        {
            int rank = r;
            tasks[r] = _workers[r].Run(() =>
            {
                try { work(rank); }
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
        if (step.Failure is not null || step.Cancellation.IsCancellationRequested)
        {
            foreach (var s in _stages) s.DropSaved();
            _transport.Clear();
            if (step.Failure is not null) throw step.Failure;
            throw new OperationCanceledException("The pipeline step was cancelled; no parameter was changed.", step.Cancellation);
        }
    }

    private static StepStatistics Statistics(StepContext step)
    {
        double wall = step.Seconds(Stopwatch.GetTimestamp());
        var timeline = step.Timeline.OrderBy(t => t.Rank).ThenBy(t => t.Start).ToList();
        return new StepStatistics(wall, step.StageBusy.ToArray(), timeline, step.GradientNorm, step.Messages.OrderBy(m => m.SendTime).ToList());
    }

    /// <summary>Stops the worker threads and releases the optimizers and any tensors still held.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var w in _workers) w.Dispose();
        foreach (var s in _stages) s.Dispose();
        _transport.Dispose();
    }
}

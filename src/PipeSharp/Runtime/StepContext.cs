using PipeSharp.Schedules;
using PipeSharp.Tracing;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>Everything the ranks share during one step; the first failure cancels the others.</summary>
internal sealed class StepContext : IDisposable
{
    private readonly CancellationTokenSource _cancel;
    private Exception? _failure;

    public StepContext(Schedules.Schedule schedule, ReplicaStep?[] replicas, CancellationToken external, CancellationToken failure = default)
    {
        Schedule = schedule;
        Training = !schedule.IsForwardOnly;
        Replicas = replicas;
        TracedReplica = Array.FindIndex(replicas, r => r != null);
        StageBusy = new double[schedule.StageCount];
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(external, failure);
    }

    /// <summary>The schedule this step runs.</summary>
    public Schedules.Schedule Schedule { get; }

    /// <summary>True for a training step (forwards keep what backwards need), false for a forward-only pass.</summary>
    public bool Training { get; }

    /// <summary>True if the backward of (stage, micro-batch) is split into I and W in this step's schedule.</summary>
    public bool IsSplit(int stage, int microBatch) => Schedule.SplitBackwards.Contains((stage, microBatch));

    /// <summary>The replica whose messages and busy time the step's statistics show (the first one held here).</summary>
    public int TracedReplica { get; }

    /// <summary>Each data-parallel replica's share of the batch (null for replicas run by other processes).</summary>
    public ReplicaStep?[] Replicas { get; }

    public double[] StageBusy { get; }
    public List<MessageTiming> Messages { get; } = new();
    private readonly System.Collections.Concurrent.ConcurrentDictionary<Transport.MessageKey, (int Rank, long Time)> _sent = new();

    public void RecordSend(Transport.MessageKey key, int fromRank, long timestamp) => _sent[key] = (fromRank, timestamp);

    public void RecordReceive(Transport.MessageKey key, int toRank, long timestamp)
    {
        if (!_sent.TryRemove(key, out var sent)) return;
        string label = $"{(key.Kind == Transport.MessageKind.Activation ? "activation" : "gradient")} {key.Stage}:{key.MicroBatch}" +
                       (key.IsBetweenNeighbours ? "" : $" (value {key.Value} from stage {key.From})");
        lock (Messages) Messages.Add(new MessageTiming(sent.Rank, toRank, label, Seconds(sent.Time), Seconds(timestamp)));
    }
    public List<ActionTiming> Timeline { get; } = new();
    public long StartTimestamp { get; } = System.Diagnostics.Stopwatch.GetTimestamp();

    /// <summary>
    /// Set for a memory measurement: forwards keep their graph as in training (without a loss), and each records here
    /// the native memory its stage's forward holds for a backward (null where it cannot be measured).
    /// </summary>
    public long?[]? ActivationBytes { get; init; }

    /// <summary>With <see cref="ActivationBytes"/>: measure each forward as if no stage recomputed (what a re-run holds for a moment).</summary>
    public bool WithoutRecomputation { get; init; }

    /// <summary>With <see cref="ActivationBytes"/>: per stage, the bytes of the boundary tensors its forward sends.</summary>
    public long[]? OutputBytes { get; init; }

    /// <summary>With <see cref="ActivationBytes"/>: per stage, what its forward holds at its end before its temporaries are freed.</summary>
    public long[]? ForwardPeakBytes { get; init; }

    /// <summary>With <see cref="ActivationBytes"/>: the heap read before each stage's forward.</summary>
    public long?[]? HeapBefore { get; init; }

    /// <summary>With <see cref="ActivationBytes"/>: per stage, its forward's results, kept with their graph (as training's backward keeps them) until measured.</summary>
    public List<Tensor>?[]? KeptForMeasurement { get; init; }

    /// <summary>With <see cref="ActivationBytes"/>: set when a stage's measured forward has ended and freed its temporaries.</summary>
    public ManualResetEventSlim[]? Measured { get; init; }

    /// <summary>If set, every rank samples this process's native heap after each action (the step's memory peak).</summary>
    public MemoryPeak? Peak { get; set; }

    /// <summary>
    /// Set for an evaluation (a forward-only step with targets): the last stage scores each micro-batch here instead
    /// of keeping its output.
    /// </summary>
    public StepEvaluation? Evaluation { get; set; }

    /// <summary>The training step's number counted from 0 (keys the dropout masks with <see cref="DropoutSeed"/>).</summary>
    public long TrainingStep { get; set; }

    /// <summary>The seed of the dropout masks (<see cref="PipelineOptions.DropoutSeed"/>).</summary>
    public long DropoutSeed { get; set; }

    /// <summary>The global gradient norm before clipping, when clipping is on.</summary>
    public double? GradientNorm { get; set; }

    public CancellationToken Cancellation => _cancel.Token;
    public Exception? Failure => Volatile.Read(ref _failure);

    public void Record(int rank, Schedules.PipelineAction action, long start, long end)
    {
        lock (Timeline) Timeline.Add(new ActionTiming(rank, action, Seconds(start), Seconds(end)));
        lock (StageBusy) StageBusy[action.Stage] += Seconds(end) - Seconds(start);
    }

    public double Seconds(long timestamp) =>
        (timestamp - StartTimestamp) / (double)System.Diagnostics.Stopwatch.Frequency;

    /// <summary>
    /// The step's statistics, with <paramref name="stageBusy"/> as each stage's busy time. Across processes the
    /// timeline and messages are this process's own; the busy times are every stage's.
    /// </summary>
    public StepStatistics Statistics(double[] stageBusy, bool skipped = false, long? peakMemory = null, long? predictedMemory = null)
    {
        double wall = Seconds(System.Diagnostics.Stopwatch.GetTimestamp());
        var timeline = Timeline.OrderBy(t => t.Rank).ThenBy(t => t.Start).ToList();
        return new StepStatistics(wall, stageBusy.ToArray(), timeline, GradientNorm, Messages.OrderBy(m => m.SendTime).ToList(), skipped)
        {
            PeakMemoryBytes = peakMemory,
            PredictedMemoryBytes = predictedMemory,
        };
    }

    /// <summary>Records the first failure and stops every rank.</summary>
    public void Fail(Exception e)
    {
        Interlocked.CompareExchange(ref _failure, e, null);
        try { _cancel.Cancel(); } catch (ObjectDisposedException) { }
    }

    public void Dispose()
    {
        foreach (var r in Replicas) r?.Dispose();
        _cancel.Dispose();
    }
}

/// <summary>One replica's micro-batches of a step, the weights of their losses, and what the last stage gives back.</summary>
internal sealed class ReplicaStep(Boundaries.TensorSet[] inputs, Tensor[]? targets, double[] lossWeights, long[]? firstSamples = null) : IDisposable
{
    private double _loss;

    /// <summary>Each micro-batch's named input tensors.</summary>
    public Boundaries.TensorSet[] Inputs { get; } = inputs;
    public Tensor[]? Targets { get; } = targets;

    /// <summary>Each micro-batch's share of the samples of the whole (global) batch.</summary>
    public double[] LossWeights { get; } = lossWeights;

    /// <summary>The index in the whole (global) batch of each micro-batch's first sample.</summary>
    public long[] FirstSamples { get; } = firstSamples ?? new long[inputs.Length];

    /// <summary>Last-stage outputs of a forward-only pass, one per micro-batch.</summary>
    public Tensor?[] Outputs { get; } = new Tensor?[inputs.Length];

    /// <summary>This replica's share of the batch loss (its micro-batches' weighted losses).</summary>
    public double Loss => _loss;

    public void AddLoss(double value)
    {
        lock (this) _loss += value;
    }

    public void Dispose()
    {
        foreach (var t in Outputs) t?.Dispose();
        foreach (var t in Inputs.SelectMany(set => set.Values)) t.Dispose();
        if (Targets != null) foreach (var t in Targets) t.Dispose();
    }
}

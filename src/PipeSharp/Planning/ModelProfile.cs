namespace PipeSharp.Planning;

/// <summary>
/// A model measured on one device: the cost of every layer for a micro-batch of <see cref="MicroBatchSamples"/>
/// samples, with <see cref="Threads"/> intra-op threads. A value: the planner and partitioner read it, the profile
/// cache stores it under <see cref="Key"/>.
/// </summary>
/// <param name="Key">What was measured: the model's layers and shapes, the micro-batch shape, the device and the threads.</param>
/// <param name="Device">The device measured on, e.g. <c>cpu</c> or <c>cuda:0</c>.</param>
/// <param name="Threads">Intra-op threads during the measurement.</param>
/// <param name="MicroBatchSamples">Samples per micro-batch.</param>
/// <param name="Layers">One cost per layer, in model order.</param>
public sealed record ModelProfile(string Key, string Device, int Threads, int MicroBatchSamples, IReadOnlyList<LayerCost> Layers)
{
    /// <summary>Bytes of the model's input per micro-batch (what the first stage reads; 0 when not measured).</summary>
    public long InputBytes { get; init; }

    /// <summary>Seconds of the optimizer step over all the model's parameters (0 when not measured).</summary>
    public double OptimizerSeconds { get; init; }

    /// <summary>
    /// Seconds of the profiled step outside its actions, on its one worker: the optimizer step, the gradient norm, the
    /// zeroing of the gradients, the freeing of the step's temporaries and the runtime's fixed part (0 when not measured).
    /// </summary>
    public double BeyondActionsSeconds { get; init; }

    /// <summary>Wall seconds of the profiled step (every layer a stage on one rank, two micro-batches; 0 when not measured).</summary>
    public double StepSeconds { get; init; }

    /// <summary>
    /// This profile with every time multiplied by <paramref name="factor"/> (bytes unchanged): the profile of a machine
    /// that runs the same work <paramref name="factor"/> times as long, as the planner's speed check finds it.
    /// </summary>
    public ModelProfile ScaledBy(double factor)
    {
        if (!(factor > 0) || double.IsInfinity(factor))
            throw new ArgumentOutOfRangeException(nameof(factor), factor, "scale a profile by a positive, finite factor.");
        return this with
        {
            Layers = Layers.Select(l => l with
            {
                Forward = l.Forward * factor, Backward = l.Backward * factor, InputGrad = l.InputGrad * factor, WeightGrad = l.WeightGrad * factor,
            }).ToList(),
            OptimizerSeconds = OptimizerSeconds * factor,
            BeyondActionsSeconds = BeyondActionsSeconds * factor,
            StepSeconds = StepSeconds * factor,
        };
    }
}

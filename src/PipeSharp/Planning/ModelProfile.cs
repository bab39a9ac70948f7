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
}

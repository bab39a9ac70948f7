namespace PipeSharp.Planning;

/// <summary>
/// What one layer costs on one device for one micro-batch: the times of its actions and the bytes it keeps and sends.
/// Measured by the profiler; read by the partitioner, the planner and the rebalancer.
/// </summary>
/// <param name="Forward">Seconds of F (the layer's forward on one micro-batch).</param>
/// <param name="Backward">Seconds of B (input and weight gradients together).</param>
/// <param name="InputGrad">Seconds of I (the input gradient alone, as the zero-bubble schedules split B).</param>
/// <param name="WeightGrad">Seconds of W (the weight gradient alone).</param>
/// <param name="ActivationBytes">Bytes a training forward keeps for the backward, per micro-batch.</param>
/// <param name="OutputBytes">Bytes of the layer's output per micro-batch: what crosses a stage boundary after it.</param>
/// <param name="ParameterBytes">Bytes of the layer's parameters (its gradients take as many).</param>
/// <param name="OptimizerBytes">Bytes of optimizer state for the layer's parameters (e.g. 2 x parameters for Adam).</param>
public sealed record LayerCost(
    double Forward,
    double Backward,
    double InputGrad,
    double WeightGrad,
    long ActivationBytes,
    long OutputBytes,
    long ParameterBytes,
    long OptimizerBytes);

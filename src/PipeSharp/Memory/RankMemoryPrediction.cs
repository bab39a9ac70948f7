namespace PipeSharp.Memory;

/// <summary>
/// The predicted peak memory of one rank (of every replica alike), in bytes, split by what holds it at the moment of
/// the peak.
/// </summary>
/// <param name="Rank">The pipeline rank.</param>
/// <param name="Stages">The stages it holds.</param>
/// <param name="ParameterBytes">Its stages' parameters (their copies of shared parameters included).</param>
/// <param name="GradientBytes">Parameter gradients allocated at the peak.</param>
/// <param name="OptimizerStateBytes">Optimizer state (AdamW: two tensors per parameter).</param>
/// <param name="ActivationBytes">What forwards keep for their backwards at the peak (and a recomputed forward, or W's inputs).</param>
/// <param name="BoundaryBytes">Received boundary tensors held at the peak (across processes; 0 in one process, where a rank reads the sender's tensor).</param>
/// <param name="SharedCopyBytes">Of <paramref name="ParameterBytes"/>, copies of parameters an earlier stage holds too (a tied embedding).</param>
/// <param name="PeakMicroBatches">Micro-batches whose forward is held at the peak, over the rank's stages.</param>
public sealed record RankMemoryPrediction(
    int Rank,
    IReadOnlyList<int> Stages,
    long ParameterBytes,
    long GradientBytes,
    long OptimizerStateBytes,
    long ActivationBytes,
    long BoundaryBytes,
    long SharedCopyBytes,
    int PeakMicroBatches)
{
    /// <summary>The predicted peak: parameters, gradients, optimizer state, activations and boundary buffers.</summary>
    public long TotalBytes => ParameterBytes + GradientBytes + OptimizerStateBytes + ActivationBytes + BoundaryBytes;

    /// <summary>
    /// The rank's peak without what a single action holds for a moment (a forward's temporaries, a backward's
    /// gradients in the making): ranks in one process reach these moments at different times.
    /// </summary>
    public long HeldBytes { get; init; }

    /// <summary>One line: the total and its parts.</summary>
    public override string ToString() =>
        $"rank {Rank} (stage{(Stages.Count > 1 ? "s" : "")} {string.Join("+", Stages)}): {MemorySize.Format(TotalBytes)} = " +
        $"parameters {MemorySize.Format(ParameterBytes)}{(SharedCopyBytes > 0 ? $" (shared copies {MemorySize.Format(SharedCopyBytes)})" : "")}" +
        $" + gradients {MemorySize.Format(GradientBytes)} + optimizer state {MemorySize.Format(OptimizerStateBytes)}" +
        $" + activations {MemorySize.Format(ActivationBytes)} ({PeakMicroBatches} micro-batch{(PeakMicroBatches == 1 ? "" : "es")})" +
        $" + boundary buffers {MemorySize.Format(BoundaryBytes)}";
}

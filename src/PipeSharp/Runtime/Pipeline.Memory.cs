using PipeSharp.Memory;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

public sealed partial class Pipeline
{
    /// <summary>
    /// Predicts each rank's peak memory before training: parameters, gradients, optimizer state (from the optimizer's
    /// type), the activations the schedule holds at its peak (one forward per stage of the first micro-batch of
    /// <paramref name="sampleInput"/>, a whole training batch, measured as <see cref="MeasureMemory"/> does) and, across
    /// processes, the received boundary buffers; see docs/memory.md. With <see cref="PipelineOptions.MemoryPerDevice"/>
    /// set, a prediction that does not fit is refused (the first training step does this by itself). Across processes
    /// every process calls it with the same input and gets every rank's prediction.
    /// </summary>
    /// <exception cref="MemoryBudgetExceededException">A rank's predicted peak exceeds its budget; nothing has trained.</exception>
    public MemoryPrediction PredictMemory(Tensor sampleInput)
    {
        ThrowIfUnusable();
        ArgumentNullException.ThrowIfNull(sampleInput);
        if (!_boundaries.IsPlain)
            throw new NotSupportedException(
                "PredictMemory measures models whose layers map one tensor to one tensor; this model's stages pass several named tensors.");
        var (stages, outputs, forwardPeaks, input) = MemoryMeasurement.MeasureWithBoundaries(_plan, _runner, _replicas[0], Backend, sampleInput, Options.MicroBatches);
        long perReplica = sampleInput.dim() == 0 ? 0 : sampleInput.shape[0] / _plan.Replicas;
        // With recomputation a forward keeps less, and a backward makes the recomputed part of the graph again for a
        // moment: that part is what the same forward keeps without recomputation, less what it keeps with it.
        long[]? recomputed = null;
        if (!_plan.Recomputation.IsNone)
        {
            var whole = MemoryMeasurement.MeasureWithBoundaries(_plan, _runner, _replicas[0], Backend, sampleInput, Options.MicroBatches,
                withoutRecomputation: true).Stages;
            recomputed = stages.Select(m => Math.Max(0, (whole[m.Stage].ActivationBytesPerMicroBatch ?? 0) - (m.ActivationBytesPerMicroBatch ?? 0))).ToArray();
        }
        return _memory.Predict(_plan, stages, outputs, forwardPeaks, input, perReplica, LocalStages.First().Optimizer, recomputed);
    }

    /// <summary>
    /// The last memory prediction (<see cref="PredictMemory"/>, or made by the first training step when
    /// <see cref="PipelineOptions.MemoryPerDevice"/> is set); null before one. Once there is one, each training step
    /// measures its peak: <see cref="Tracing.StepStatistics.PeakMemoryBytes"/>.
    /// </summary>
    public MemoryPrediction? PredictedMemory => _memory.Prediction;

    /// <summary>
    /// The largest measured peak of this process's native memory over the training steps since the prediction (see
    /// <see cref="Tracing.StepStatistics.PeakMemoryBytes"/>); null before a measured step.
    /// </summary>
    public long? PeakMemoryBytes => _memory.PeakBytes;
}

namespace PipeSharp.Runtime;

/// <summary>
/// What a training step does when its loss or its global gradient norm is not finite (NaN or infinite): see
/// <see cref="PipelineOptions.NonFiniteGradients"/>. Either way the optimizer step is not taken, so no parameter and
/// no optimizer state takes a NaN.
/// </summary>
public enum NonFiniteGradientPolicy
{
    /// <summary>Throw a <see cref="NonFiniteGradientException"/> naming the step (the default).</summary>
    Throw,

    /// <summary>
    /// Skip the step: the gradients are zeroed, neither the optimizers nor the learning-rate schedulers are stepped,
    /// <see cref="Pipeline.TrainStep(TorchSharp.torch.Tensor, TorchSharp.torch.Tensor, System.Threading.CancellationToken)"/> returns the (non-finite) loss and <see cref="Tracing.StepStatistics.Skipped"/> is true.
    /// </summary>
    SkipStep,
}

namespace PipeSharp.Runtime;

/// <summary>
/// A training step's loss or global gradient norm was not finite (NaN or infinite), and
/// <see cref="PipelineOptions.NonFiniteGradients"/> is <see cref="NonFiniteGradientPolicy.Throw"/>. The optimizer
/// step was not taken: every parameter and the optimizers' and schedulers' state are as they were before the step
/// (the step's gradients are left in place, to see where the NaN came from). Under MPI every rank throws it in the
/// same step (the norm and the loss are global), and the pipeline can take further steps.
/// </summary>
public sealed class NonFiniteGradientException : Exception
{
    /// <summary>Creates the exception for training step <paramref name="step"/>.</summary>
    /// <param name="step">The 1-based number of the step (the pipeline's count of training steps, or the caller's).</param>
    /// <param name="loss">The step's loss.</param>
    /// <param name="gradientNorm">The global gradient norm over all stages.</param>
    /// <param name="inner">An exception this one replaces, if any.</param>
    public NonFiniteGradientException(long step, double loss, double gradientNorm, Exception? inner = null)
        : base($"training step {step}: the loss is {loss:G6} and the global gradient norm is {gradientNorm:G6}, which is not finite, " +
               "so the step was not taken (no parameter or optimizer state changed). Lower the learning rate, clip gradients " +
               "(MaxGradNorm), check this step's batch, or set PipelineOptions.NonFiniteGradients = SkipStep to skip such steps.", inner)
    {
        Step = step;
        Loss = loss;
        GradientNorm = gradientNorm;
    }

    /// <summary>The 1-based number of the step that was not taken.</summary>
    public long Step { get; }

    /// <summary>The step's loss (the mean over the batch).</summary>
    public double Loss { get; }

    /// <summary>The global gradient norm over all stages, before any clipping.</summary>
    public double GradientNorm { get; }
}

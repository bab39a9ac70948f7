namespace PipeSharp.Training;

/// <summary>
/// Linear warm-up from 0 to <see cref="Peak"/> over <see cref="WarmupSteps"/> steps, then cosine decay to
/// <see cref="Minimum"/> at <see cref="TotalSteps"/> (nanoGPT's schedule). A pure function of the step, so a resumed
/// run gets exactly the rates of an uninterrupted one.
/// </summary>
public sealed record LearningRateSchedule(double Peak, int WarmupSteps, int TotalSteps, double Minimum)
{
    /// <summary>The rate for step <paramref name="step"/> (0-based).</summary>
    public double At(int step)
    {
        if (WarmupSteps > 0 && step < WarmupSteps) return Peak * (step + 1) / WarmupSteps;
        if (step >= TotalSteps) return Minimum;
        double progress = (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps);
        return Minimum + 0.5 * (1 + Math.Cos(Math.PI * progress)) * (Peak - Minimum);
    }
}

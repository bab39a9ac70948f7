using PipeSharp.Schedules;

namespace PipeSharp.Tracing;

/// <summary>What one training step or forward pass took.</summary>
public sealed class StepStatistics
{
    /// <summary>Creates the statistics of one step.</summary>
    public StepStatistics(double wallSeconds, IReadOnlyList<double> stageBusySeconds, IReadOnlyList<ActionTiming> timeline,
        double? gradientNorm = null, IReadOnlyList<MessageTiming>? messages = null, bool skipped = false)
    {
        Skipped = skipped;
        Messages = messages ?? [];
        GradientNorm = gradientNorm;
        WallSeconds = wallSeconds;
        StageBusySeconds = stageBusySeconds;
        Timeline = timeline;
    }

    /// <summary>Every activation and gradient sent between stages, with when it was sent and received.</summary>
    public IReadOnlyList<MessageTiming> Messages { get; }

    /// <summary>The global gradient norm before clipping (null unless clipping is on).</summary>
    public double? GradientNorm { get; }

    /// <summary>
    /// True if the step was skipped: its loss or gradient norm was not finite and
    /// <c>PipelineOptions.NonFiniteGradients</c> is <c>NonFiniteGradientPolicy.SkipStep</c>,
    /// so no optimizer or scheduler step was taken.
    /// </summary>
    public bool Skipped { get; }

    /// <summary>Wall-clock time of the whole step, including the optimizer step.</summary>
    public double WallSeconds { get; }

    /// <summary>Seconds each stage spent computing (forwards, backwards and its optimizer step).</summary>
    public IReadOnlyList<double> StageBusySeconds { get; }

    /// <summary>Every action with its start (when its inputs had arrived) and end, ordered by rank, then start.</summary>
    public IReadOnlyList<ActionTiming> Timeline { get; }

    /// <summary>
    /// The largest native memory this process held during the step, in bytes above what it held before the pipeline
    /// was made (the model's own tensors counted): sampled after every action and after the optimizer step. In one
    /// process this covers all its ranks together; under MPI, the process's one rank. Null unless the pipeline has a
    /// memory prediction (<c>Pipeline.PredictMemory</c>, or <c>PipelineOptions.MemoryPerDevice</c>) and the platform's
    /// heap can be read (glibc).
    /// </summary>
    public long? PeakMemoryBytes { get; init; }

    /// <summary>
    /// What the prediction says the same ranks need (the sum of this process's ranks in one process, the process's
    /// rank under MPI), to compare with <see cref="PeakMemoryBytes"/>; null without a prediction.
    /// </summary>
    public long? PredictedMemoryBytes { get; init; }

    /// <summary>
    /// The layers that moved between ranks after this step (rebalancing), before the next one; empty when none did.
    /// The timelines show them (<see cref="TimelineText"/>, <see cref="TimelineSvg"/>, <see cref="ChromeTrace"/>).
    /// </summary>
    public IReadOnlyList<LayerMove> Moves { get; internal set; } = [];

    /// <summary>The share of the step each stage was busy, between 0 and 1.</summary>
    public IReadOnlyList<double> StageBusyFraction =>
        StageBusySeconds.Select(b => WallSeconds > 0 ? Math.Min(1.0, b / WallSeconds) : 0).ToList();
}

namespace PipeSharp.Runtime;

/// <summary>
/// Automatic rebalancing (<see cref="PipelineOptions.Rebalancing"/>): after every training step each rank's busy time
/// is measured; when the slowest rank is busy more than <see cref="Threshold"/> above the mean for
/// <see cref="Steps"/> steps in a row, the split is computed again from each rank's measured speed and, if the
/// predicted gain is at least <see cref="MinimumGain"/>, layers move between ranks (with their parameters, gradients
/// and optimizer state) before the next step. Every rank takes the same decision. The moves are in <see cref="Pipeline.Moves"/>.
/// </summary>
public sealed record RebalancingOptions
{
    /// <summary>On or off (default on; a null <see cref="PipelineOptions.Rebalancing"/> is off too).</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>How far above the mean the slowest rank's busy time must be to count, as a share (default 0.1: 10%).</summary>
    public double Threshold { get; init; } = 0.1;

    /// <summary>For how many consecutive steps (default 3); their busy times are averaged to measure the speeds.</summary>
    public int Steps { get; init; } = 3;

    /// <summary>
    /// The smallest predicted saving of step time that is worth a move, as a share (default 0.05: 5%); twice as much to
    /// go back to a split the pipeline has left.
    /// </summary>
    public double MinimumGain { get; init; } = 0.05;

    /// <summary>Refuses values that cannot work, naming the option.</summary>
    internal void Check()
    {
        if (!(Threshold >= 0 && double.IsFinite(Threshold)))
            throw new ArgumentOutOfRangeException("rebalancing.threshold", Threshold, "Rebalancing.Threshold must be a finite share of at least 0 (0.1: the slowest rank 10% above the mean).");
        if (Steps < 1)
            throw new ArgumentOutOfRangeException("rebalancing.steps", Steps, "Rebalancing.Steps (consecutive slow steps before a move) must be at least 1.");
        if (!(MinimumGain >= 0 && MinimumGain < 1))
            throw new ArgumentOutOfRangeException("rebalancing.minimumGain", MinimumGain, "Rebalancing.MinimumGain must be a share between 0 and 1 (0.05: 5% of the step time).");
    }
}

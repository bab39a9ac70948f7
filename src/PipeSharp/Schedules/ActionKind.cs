namespace PipeSharp.Schedules;

/// <summary>The compute work one action of a schedule does for one (stage, micro-batch).</summary>
public enum ActionKind
{
    /// <summary>Forward pass (text form <c>F</c>).</summary>
    Forward,
    /// <summary>Full backward pass: input and weight gradients (text form <c>B</c>).</summary>
    Backward,
    /// <summary>Input-gradient half of a backward; sends the gradient on at once (text form <c>I</c>).</summary>
    InputGrad,
    /// <summary>Weight-gradient half of a backward, from what the matching <see cref="InputGrad"/> kept (text form <c>W</c>).</summary>
    WeightGrad,
}

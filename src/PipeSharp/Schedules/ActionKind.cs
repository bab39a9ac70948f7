namespace PipeSharp.Schedules;

/// <summary>The compute work one action of a schedule does for one (stage, micro-batch).</summary>
public enum ActionKind
{
    /// <summary>Forward pass (text form <c>F</c>).</summary>
    Forward,
    /// <summary>Full backward pass: input and weight gradients (text form <c>B</c>).</summary>
    Backward,
}

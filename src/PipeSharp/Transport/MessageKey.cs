namespace PipeSharp.Transport;

/// <summary>What a message between stages carries.</summary>
internal enum MessageKind
{
    /// <summary>A forward activation, sent to the stage that consumes it.</summary>
    Activation,
    /// <summary>The gradient of a stage's input, sent back to the stage that produced that input.</summary>
    Gradient,
    /// <summary>A last-stage output of a forward-only pass, shared with every rank (across processes only).</summary>
    Output,
}

/// <summary>
/// Names one message: its kind, the stage that will consume it and the micro-batch. Messages are received by
/// key, never by arrival order, so a schedule's order of sends and receives cannot cause a hang.
/// </summary>
internal readonly record struct MessageKey(MessageKind Kind, int Stage, int MicroBatch)
{
    /// <inheritdoc />
    public override string ToString() => $"{Kind} for stage {Stage}, micro-batch {MicroBatch}";
}

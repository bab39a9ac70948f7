namespace PipeSharp.Transport;

/// <summary>What a message between stages carries.</summary>
internal enum MessageKind
{
    /// <summary>A forward activation (a boundary value), sent to the stage that consumes it.</summary>
    Activation,
    /// <summary>The gradient of a boundary value, sent back to the stage that produced that value.</summary>
    Gradient,
    /// <summary>A last-stage output of a forward-only pass, shared with every rank (across processes only).</summary>
    Output,
}

/// <summary>
/// Names one message: its kind, the stage that will consume it, the micro-batch, the stage that sends it and the
/// boundary value it carries. Messages are received by key, never by arrival order, so a schedule's order of sends
/// and receives cannot cause a hang.
/// </summary>
/// <remarks>
/// An activation of value <c>v</c> made by stage <c>p</c> for stage <c>c</c> is <c>(Activation, c, i, from: p, v)</c>;
/// its gradient goes back as <c>(Gradient, p, i, from: c, v)</c>. A value made early and consumed several stages later
/// (a skip connection) is one message from producer to consumer, not one per stage in between. Value 0 is the single
/// value <c>x</c> of a model whose layers map one tensor to one tensor, whose messages go between neighbours only.
/// </remarks>
internal readonly record struct MessageKey
{
    /// <summary>A message of value 0 between neighbours: an activation from stage <c>stage - 1</c>, a gradient from <c>stage + 1</c>.</summary>
    public MessageKey(MessageKind kind, int stage, int microBatch)
        : this(kind, stage, microBatch, Neighbour(kind, stage), 0)
    {
    }

    /// <summary>A message of boundary value <paramref name="value"/> from stage <paramref name="from"/> to stage <paramref name="stage"/>.</summary>
    public MessageKey(MessageKind kind, int stage, int microBatch, int from, int value)
    {
        Kind = kind;
        Stage = stage;
        MicroBatch = microBatch;
        From = from;
        Value = value;
    }

    /// <summary>What the message carries.</summary>
    public MessageKind Kind { get; }

    /// <summary>The stage that consumes the message.</summary>
    public int Stage { get; }

    /// <summary>The micro-batch.</summary>
    public int MicroBatch { get; }

    /// <summary>The stage that sends the message (-1 for an output of a forward-only pass).</summary>
    public int From { get; }

    /// <summary>The boundary value's number in the pipeline's list of value names (0: <c>x</c>).</summary>
    public int Value { get; }

    private static int Neighbour(MessageKind kind, int stage) => kind switch
    {
        MessageKind.Activation => stage - 1,
        MessageKind.Gradient => stage + 1,
        _ => -1,
    };

    /// <summary>True for a message of value 0 between neighbours, the only kind a model of one value sends.</summary>
    public bool IsBetweenNeighbours => Value == 0 && From == Neighbour(Kind, Stage);

    /// <inheritdoc />
    public override string ToString() =>
        IsBetweenNeighbours
            ? $"{Kind} for stage {Stage}, micro-batch {MicroBatch}"
            : $"{Kind} of value {Value} from stage {From} for stage {Stage}, micro-batch {MicroBatch}";
}

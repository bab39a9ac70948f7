using System.Text.RegularExpressions;

namespace PipeSharp.Schedules;

/// <summary>
/// One unit of work in a schedule: <see cref="Kind"/> for micro-batch <see cref="MicroBatch"/> on stage
/// <see cref="Stage"/>. Its text form puts the stage first, then the kind, then the micro-batch: <c>2F0</c> is the
/// forward of micro-batch 0 on stage 2.
/// </summary>
public readonly record struct PipelineAction(ActionKind Kind, int Stage, int MicroBatch)
{
    private static readonly Regex TextForm = new(@"^\s*(\d+)([FBIW])(\d+)\s*$", RegexOptions.Compiled);

    /// <summary>A forward action.</summary>
    public static PipelineAction F(int stage, int microBatch) => new(ActionKind.Forward, stage, microBatch);

    /// <summary>A full-backward action.</summary>
    public static PipelineAction B(int stage, int microBatch) => new(ActionKind.Backward, stage, microBatch);

    /// <summary>An input-gradient action (first half of a split backward).</summary>
    public static PipelineAction I(int stage, int microBatch) => new(ActionKind.InputGrad, stage, microBatch);

    /// <summary>A weight-gradient action (second half of a split backward).</summary>
    public static PipelineAction W(int stage, int microBatch) => new(ActionKind.WeightGrad, stage, microBatch);

    /// <summary>The letter of an action kind in the text form.</summary>
    public static char Letter(ActionKind kind) => kind switch
    {
        ActionKind.Forward => 'F',
        ActionKind.Backward => 'B',
        ActionKind.InputGrad => 'I',
        ActionKind.WeightGrad => 'W',
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    private static ActionKind FromLetter(char letter) => letter switch
    {
        'F' => ActionKind.Forward,
        'B' => ActionKind.Backward,
        'I' => ActionKind.InputGrad,
        _ => ActionKind.WeightGrad,
    };

    /// <inheritdoc />
    public override string ToString() => $"{Stage}{Letter(Kind)}{MicroBatch}";

    /// <summary>Parses the text form, e.g. <c>2F0</c> or <c>0B3</c>.</summary>
    /// <exception cref="FormatException">The text is not of the form stage, kind letter, micro-batch.</exception>
    public static PipelineAction Parse(string text)
    {
        var m = TextForm.Match(text);
        if (!m.Success)
            throw new FormatException($"'{text}' is not an action: write stage, kind (F, B, I or W) and micro-batch, e.g. 2F0.");
        return new PipelineAction(FromLetter(m.Groups[2].Value[0]), int.Parse(m.Groups[1].Value), int.Parse(m.Groups[3].Value));
    }
}

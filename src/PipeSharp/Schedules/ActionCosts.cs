namespace PipeSharp.Schedules;

/// <summary>
/// How long each kind of action takes (any unit, e.g. milliseconds), and how long a message takes to cross from one
/// rank to another. Used by the simulator and by generators that place actions greedily.
/// </summary>
/// <param name="Forward">Cost of F.</param>
/// <param name="Backward">Cost of a full backward B.</param>
/// <param name="InputGrad">Cost of I (the input-gradient half of B).</param>
/// <param name="WeightGrad">Cost of W (the weight-gradient half of B).</param>
/// <param name="Communication">Time for an activation or gradient to reach another rank (0 on the same rank).</param>
public sealed record ActionCosts(double Forward = 1, double Backward = 2, double InputGrad = 1, double WeightGrad = 1, double Communication = 0)
{
    /// <summary>F = I = W = 1, B = I + W = 2, no communication time: the setting of the Zero Bubble paper's analysis.</summary>
    public static ActionCosts Unit { get; } = new();

    /// <summary>The cost of one action of <paramref name="kind"/>.</summary>
    public double Of(ActionKind kind) => kind switch
    {
        ActionKind.Forward => Forward,
        ActionKind.Backward => Backward,
        ActionKind.InputGrad => InputGrad,
        ActionKind.WeightGrad => WeightGrad,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>Parses <c>F,B,I,W</c> or <c>F,B,I,W,C</c> (C: communication time), e.g. <c>1,2,1,1</c>.</summary>
    /// <exception cref="FormatException">Not four or five non-negative numbers.</exception>
    public static ActionCosts Parse(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var values = new double[parts.Length];
        for (int k = 0; k < parts.Length; k++)
        {
            if (!double.TryParse(parts[k], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out values[k]) || values[k] < 0)
                throw new FormatException($"costs '{text}': '{parts[k]}' is not a non-negative number.");
        }
        if (values.Length is not (4 or 5))
            throw new FormatException($"costs '{text}' must be F,B,I,W or F,B,I,W,C (C: communication time per hop), e.g. 1,2,1,1.");
        return new ActionCosts(values[0], values[1], values[2], values[3], values.Length == 5 ? values[4] : 0);
    }
}

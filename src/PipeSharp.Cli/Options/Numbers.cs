using System.CommandLine.Parsing;
using System.Globalization;
using System.Numerics;

namespace PipeSharp.Cli.Options;

/// <summary>
/// Parsers for numeric options that also check the range, with plain messages ("--stages: 'abc' is not a whole
/// number.", "--stages must be at least 1, got 0.") instead of System.CommandLine's, which name the .NET type.
/// </summary>
internal static class Numbers
{
    public static Func<ArgumentResult, int> AtLeast(int minimum) =>
        result => Parse<int>(result, v => v >= minimum, $"at least {minimum}");

    /// <summary>A whole number in [minimum, maximum]; above the maximum the message gives <paramref name="why"/>.</summary>
    public static Func<ArgumentResult, int> Between(int minimum, int maximum, string why) => result =>
    {
        string text = string.Join(" ", result.Tokens.Select(t => t.Value));
        string option = result.Parent is OptionResult o ? o.Option.Name : "value";
        // Parsed as a long, so that a count past int's range gets the same message as any count above the maximum.
        if (long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out long value) && value > maximum)
        {
            result.AddError($"{option} must be at most {maximum}, got {text}: {why}.");
            return maximum;
        }
        return Parse<int>(result, v => v >= minimum, $"at least {minimum}");
    };

    public static readonly Func<ArgumentResult, long> AnyWhole = result => Parse<long>(result, _ => true, "");

    public static readonly Func<ArgumentResult, double> Positive =
        result => Parse<double>(result, v => v > 0 && double.IsFinite(v), "a positive number");

    public static readonly Func<ArgumentResult, double> NonNegative =
        result => Parse<double>(result, v => v >= 0 && double.IsFinite(v), "zero or a positive number");

    private static T Parse<T>(ArgumentResult result, Func<T, bool> valid, string requirement) where T : INumberBase<T>
    {
        string text = string.Join(" ", result.Tokens.Select(t => t.Value));
        string option = result.Parent is OptionResult o ? o.Option.Name : "value";
        bool whole = typeof(T) == typeof(int) || typeof(T) == typeof(long);
        var style = whole ? NumberStyles.Integer : NumberStyles.Float;
        if (!T.TryParse(text, style, CultureInfo.InvariantCulture, out var value))
            result.AddError($"{option}: '{text}' is not {(whole ? "a whole number" : "a number")}.");
        else if (!valid(value))
            result.AddError($"{option} must be {requirement}, got {text}.");
        return value ?? T.Zero;
    }
}

using System.CommandLine;

namespace PipeSharp.Cli.Options;

/// <summary>Reading options whose default depends on other options.</summary>
internal static class OptionValues
{
    /// <summary>The option's value if it was on the command line, else null (the default depends on other options).</summary>
    public static T? Given<T>(this ParseResult args, Option<T> option) where T : struct =>
        args.GetResult(option) is { Implicit: false } ? args.GetValue(option) : null;

    /// <summary>True when the option is on the command line (not just a default).</summary>
    public static bool IsGiven(this ParseResult args, Option option) => args.GetResult(option) is { Implicit: false };
}

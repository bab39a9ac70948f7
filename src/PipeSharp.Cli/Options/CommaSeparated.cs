using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace PipeSharp.Cli.Options;

/// <summary>Options whose value is a comma-separated list, e.g. <c>--balance 2,2,2,2,3</c>.</summary>
internal static class CommaSeparated
{
    /// <summary>A list of whole numbers; a bad entry is a parse error that names it.</summary>
    public static Option<int[]?> Ints(string name, string helpName, string description, string example) =>
        new(name)
        {
            Description = description,
            HelpName = helpName,
            Arity = ArgumentArity.ExactlyOne,
            CustomParser = result =>
            {
                var items = Split(result);
                var numbers = new int[items.Length];
                for (int i = 0; i < items.Length; i++)
                {
                    if (!int.TryParse(items[i], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out numbers[i]))
                    {
                        result.AddError(
                            $"{name}: '{items[i]}' (entry {i + 1} of '{Raw(result)}') is not a whole number. " +
                            $"Write whole numbers separated by commas, e.g. {name} {example}.");
                        return null;
                    }
                }
                return numbers;
            },
        };

    /// <summary>A list of names; empty entries are a parse error.</summary>
    public static Option<string[]?> Strings(string name, string helpName, string description, string example) =>
        new(name)
        {
            Description = description,
            HelpName = helpName,
            Arity = ArgumentArity.ExactlyOne,
            CustomParser = result =>
            {
                var items = Split(result);
                if (items.Any(string.IsNullOrEmpty))
                {
                    result.AddError($"{name}: '{Raw(result)}' has an empty entry. Write names separated by commas, e.g. {name} {example}.");
                    return null;
                }
                return items;
            },
        };

    private static string Raw(ArgumentResult result) => string.Join(" ", result.Tokens.Select(t => t.Value));

    private static string[] Split(ArgumentResult result) =>
        Raw(result).Split(',').Select(s => s.Trim()).ToArray();
}

using System.CommandLine;
using System.CommandLine.Parsing;

namespace PipeSharp.Cli.Options;

/// <summary>
/// Options renamed when the vocabulary became stage (a model piece), rank (a worker) and replica (a copy of the
/// pipeline). The old names still work for one release, as aliases, and using one prints a note on stderr.
/// </summary>
internal static class RenamedOptions
{
    private static readonly Dictionary<string, string> OldNames = new()
    {
        ["--ranks"] = "--stages",
        ["--stages-per-rank"] = "--chunks",
        ["--replicas"] = "--data-parallel",
        ["--threads-per-rank"] = "--threads-per-stage",
    };

    /// <summary>The old name of option <paramref name="newName"/>, to add as its alias.</summary>
    public static string OldName(string newName) => OldNames[newName];

    /// <summary>
    /// One line on <paramref name="error"/> for each old name the command line used, e.g. "note: --stages is now
    /// --ranks; --stages will be removed in the next release." Under mpirun only rank 0 prints it.
    /// </summary>
    public static void NoteOldNames(ParseResult parsed, TextWriter error)
    {
        if (Environment.GetEnvironmentVariable("PMI_RANK") is { } rank && rank != "0") return;
        var printed = new HashSet<string>();
        foreach (var result in parsed.CommandResult.Children.OfType<OptionResult>())
        {
            string? used = result.IdentifierToken?.Value;
            var renamed = OldNames.FirstOrDefault(p => p.Value == used);
            if (renamed.Key is null || !printed.Add(used!)) continue;
            error.WriteLine($"note: {used} is now {renamed.Key}; {used} will be removed in the next release.");
        }
    }
}

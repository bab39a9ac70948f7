using System.CommandLine;

namespace PipeSharp.Cli.Options;

/// <summary>Options naming a file to write, e.g. <c>--svg timeline.svg</c>; the folder must exist (checked when parsing).</summary>
internal static class OutputFile
{
    public static Option<string?> Create(string name, string helpName, string description)
    {
        var option = new Option<string?>(name) { Description = description, HelpName = helpName };
        option.Validators.Add(result =>
        {
            string path = result.GetValueOrDefault<string?>() ?? "";
            string folder = Path.GetDirectoryName(Path.GetFullPath(path.Length == 0 ? "." : path)) ?? "";
            if (path.Length == 0 || Directory.Exists(path))
                result.AddError($"{name}: '{path}' is not a file name.");
            else if (!Directory.Exists(folder))
                result.AddError($"{name}: the folder '{folder}' does not exist.");
        });
        return option;
    }
}

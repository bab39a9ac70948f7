using System.CommandLine;

namespace PipeSharp.Cli.Options;

/// <summary>
/// Options naming a file to write, e.g. <c>--svg timeline.svg</c>: the folder must exist (checked when parsing), and
/// <see cref="CheckWritable"/> makes sure, before any work starts, that the file can be written.
/// </summary>
internal static class OutputFile
{
    public static Option<string?> Create(string name, string helpName, string description)
    {
        var option = new Option<string?>(name) { Description = description, HelpName = helpName };
        option.Validators.Add(result =>
        {
            if (Problem(result.GetValueOrDefault<string?>() ?? "") is { } problem) result.AddError($"{name}: {problem}");
        });
        return option;
    }

    /// <summary>
    /// Refuses, naming <paramref name="option"/>, a file that cannot be written (a read-only place, a folder, a folder
    /// that does not exist), so that a run does not find out only when it is over. The file is opened for writing: an
    /// existing one without being truncated (nothing in it is lost), a new one is created and deleted again.
    /// </summary>
    public static void CheckWritable(string? path, string option)
    {
        if (path is null) return;
        if (Problem(path) is { } problem) throw new ArgumentException($"{option}: {problem}");
        string full = Path.GetFullPath(path);
        bool existed = File.Exists(full);
        try
        {
            using (new FileStream(full, existed ? FileMode.Open : FileMode.CreateNew, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete))
            {
            }
            if (!existed) File.Delete(full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            string reason = e switch
            {
                UnauthorizedAccessException => "permission denied",
                FileNotFoundException or DirectoryNotFoundException => "its folder does not take new files",
                _ => e.Message,
            };
            throw new ArgumentException($"{option}: cannot write '{path}' ({reason}): give a file in a folder you can write to.");
        }
    }

    // What is wrong with the path itself, if anything: empty, a folder, or in a folder that does not exist.
    private static string? Problem(string path)
    {
        if (path.Length == 0) return "'' is not a file name.";
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full)) return $"cannot write '{path}': it is a folder; give a file name.";
        string? folder = Path.GetDirectoryName(full);
        if (folder is null || Directory.Exists(folder)) return null;
        for (string? up = folder; up is not null; up = Path.GetDirectoryName(up))
            if (File.Exists(up)) return $"cannot write '{path}': '{up}' is a file, not a folder.";
        return $"cannot write '{path}': the folder '{folder}' does not exist.";
    }
}

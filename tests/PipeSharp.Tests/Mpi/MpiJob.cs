using System.Diagnostics;
using System.Text;

namespace PipeSharp.Tests.Mpi;

/// <summary>MPI jobs run alone: they start several processes and measure how fast failures spread.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MpiCollection
{
    public const string Name = "MPI jobs";
}

/// <summary>A test that needs MPICH's launcher; skipped (with the reason) where it is not installed.</summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute()
    {
        if (MpiJob.Launcher is null) Skip = "mpirun.mpich is not installed (apt-get install mpich; .ci/run installs it).";
    }
}

/// <summary>
/// Runs <c>pipesharp</c> (the CLI of this build), or another program of this build, under <c>mpirun.mpich</c> and
/// collects what it printed.
/// </summary>
internal static class MpiJob
{
    public static readonly string? Launcher = new[] { "/usr/bin/mpirun.mpich", "/usr/local/bin/mpirun.mpich" }.FirstOrDefault(File.Exists);

    /// <summary>The CLI assembly built next to this test assembly (same configuration).</summary>
    public static string Cli => Built("src", "PipeSharp.Cli");

    /// <summary>The assembly of project <paramref name="project"/> in folder <paramref name="folder"/>, built in this configuration.</summary>
    public static string Built(string folder, string project)
    {
        // tests/PipeSharp.Tests/bin/<Configuration>/<tfm>/ -> <folder>/<project>/bin/<Configuration>/<tfm>/<project>.dll
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string tfm = here.Name, configuration = here.Parent!.Name;
        string root = here.Parent!.Parent!.Parent!.Parent!.Parent!.FullName;
        return Path.Combine(root, folder, project, "bin", configuration, tfm, project + ".dll");
    }

    public sealed record Result(int ExitCode, string Output, TimeSpan Elapsed);

    /// <summary>Starts the job; the caller waits for it (and may kill ranks meanwhile).</summary>
    public static Process Start(int processes, string arguments, StringBuilder output, string launcherOptions = "", string? program = null)
    {
        var info = new ProcessStartInfo(Launcher!, $"{launcherOptions} -np {processes} dotnet {program ?? Cli} {arguments}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.Environment["CI"] = "true";
        return StartCollecting(info, output);
    }

    /// <summary>Starts <paramref name="info"/> (streams redirected) with its output and errors appended to <paramref name="output"/>.</summary>
    public static Process StartCollecting(ProcessStartInfo info, StringBuilder output)
    {
        var process = new Process { StartInfo = info };
        process.OutputDataReceived += (_, e) => { if (e.Data != null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (output) output.AppendLine(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    /// <summary>Starts the CLI of this build in one process (no mpirun), its output and errors appended to <paramref name="output"/>.</summary>
    public static Process StartCli(string arguments, StringBuilder output)
    {
        var info = new ProcessStartInfo("dotnet", $"{Cli} {arguments}") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.Environment["CI"] = "true";
        return StartCollecting(info, output);
    }

    /// <summary>
    /// Waits until what <paramref name="process"/> printed satisfies <paramref name="condition"/>; fails the test (with the
    /// output) if the process ends first or <paramref name="timeout"/> passes. The caller kills the process when done.
    /// </summary>
    public static void WaitForOutput(Process process, StringBuilder output, Func<string, bool> condition, TimeSpan timeout, string what)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            string text;
            lock (output) text = output.ToString();
            if (condition(text)) return;
            if (process.HasExited) Assert.Fail($"the process ended (exit code {process.ExitCode}) before it {what}:\n{text}");
            if (clock.Elapsed > timeout) Assert.Fail($"the process had not {what} after {timeout.TotalSeconds:F0} s:\n{text}");
            Thread.Sleep(50);
        }
    }

    /// <summary>Runs the job to the end; kills it (and fails) if it takes longer than <paramref name="timeout"/>.</summary>
    public static Result Run(int processes, string arguments, TimeSpan timeout, string launcherOptions = "", string? program = null)
    {
        var output = new StringBuilder();
        var clock = Stopwatch.StartNew();
        using var process = Start(processes, arguments, output, launcherOptions, program);
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            Assert.Fail($"mpirun -np {processes} {Path.GetFileName(program ?? "pipesharp")} {arguments} did not finish within {timeout.TotalSeconds:F0} s:\n{output}");
        }
        process.WaitForExit(); // the output readers
        return new Result(process.ExitCode, output.ToString(), clock.Elapsed);
    }

    /// <summary>PIDs of this user's processes running the CLI with <paramref name="marker"/> on their command line.</summary>
    public static List<int> Processes(string marker) =>
        Directory.EnumerateDirectories("/proc")
            .Select(d => int.TryParse(Path.GetFileName(d), out int pid) ? pid : -1)
            .Where(pid => pid > 0)
            .Where(pid =>
            {
                try { return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ') is var c && c.Contains("PipeSharp.Cli.dll") && c.Contains(marker) && !c.Contains("mpirun"); }
                catch (IOException) { return false; }
                catch (UnauthorizedAccessException) { return false; }
            })
            .ToList();
}

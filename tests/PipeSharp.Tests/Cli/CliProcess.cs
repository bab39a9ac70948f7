using System.Diagnostics;
using System.Text;
using PipeSharp.Tests.Mpi;

namespace PipeSharp.Tests.Cli;

/// <summary>Runs <c>pipesharp</c> (the CLI of this build) as a process of its own and collects what it printed.</summary>
internal static class CliProcess
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public string Output => Stdout + Stderr;
    }

    /// <summary>The process for <paramref name="arguments"/>, streams redirected, not started.</summary>
    public static ProcessStartInfo Info(params string[] arguments)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(MpiJob.Cli);
        foreach (var a in arguments) info.ArgumentList.Add(a);
        info.Environment["CI"] = "true";
        return info;
    }

    /// <summary>
    /// Runs the CLI to the end (in <paramref name="workingDirectory"/>, or this process's); kills it (and fails) after
    /// <paramref name="timeout"/> (default 2 minutes).
    /// </summary>
    public static Result Run(string[] arguments, TimeSpan? timeout = null, string? workingDirectory = null)
    {
        var info = Info(arguments);
        if (workingDirectory is not null) info.WorkingDirectory = workingDirectory;
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout ?? TimeSpan.FromMinutes(2)))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            Assert.Fail($"pipesharp {string.Join(" ", arguments)} did not finish in time:\n{stdout.Result}{stderr.Result}");
        }
        process.WaitForExit();
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }

    public static Result Run(params string[] arguments) => Run(arguments, null);
}

/// <summary>A checkpoint of a short <c>train --model gpt</c> run on the sorting task, made once for the tests that read it.</summary>
public sealed class SortingCheckpoint : IDisposable
{
    private readonly TempFolder _folder = new();

    public SortingCheckpoint()
    {
        Directory = _folder["ck"];
        var run = CliProcess.Run("train", "--model", "gpt", "--task", "sorting", "--steps", "2", "--eval-batches", "1", "--checkpoint", Directory);
        Assert.True(run.ExitCode == 0, run.Output);
    }

    /// <summary>The checkpoint folder (its --checkpoint DIR).</summary>
    public string Directory { get; }

    public void Dispose() => _folder.Dispose();
}

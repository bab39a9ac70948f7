using System.Diagnostics;
using System.Text;
using PipeSharp.Tests.Mpi;

namespace PipeSharp.Tests.Cli;

/// <summary>Runs <c>pipesharp</c> (the CLI of this build) as a process of its own, without mpirun.</summary>
internal static class CliProcess
{
    public sealed record Result(int ExitCode, string Output, string Errors);

    /// <summary>Runs the CLI to the end in <paramref name="workingDirectory"/>; kills it (and fails) after <paramref name="timeout"/>.</summary>
    public static Result Run(string arguments, TimeSpan timeout, string? workingDirectory = null)
    {
        var info = new ProcessStartInfo("dotnet", $"{MpiJob.Cli} {arguments}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        info.Environment["CI"] = "true";
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            Assert.Fail($"pipesharp {arguments} did not finish within {timeout.TotalSeconds:F0} s:\n{output.Result}\n{errors.Result}");
        }
        process.WaitForExit();
        return new Result(process.ExitCode, output.Result, errors.Result);
    }
}

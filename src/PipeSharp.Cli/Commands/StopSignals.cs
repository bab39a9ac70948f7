using System.Runtime.InteropServices;
using PipeSharp.Runtime;

namespace PipeSharp.Cli.Commands;

/// <summary>
/// Turns SIGINT (Ctrl+C) and SIGTERM (what container and cluster managers send) into a <see cref="StopRequest"/>: the
/// first signal asks the pipeline to stop after a step that every rank agrees on, so that the run saves a checkpoint
/// of it and exits with 130 (SIGINT) or 143 (SIGTERM); a second signal ends the process at once with that code,
/// without waiting for the step, a checkpoint or MPI.
/// </summary>
/// <remarks>
/// Created before anything else of a command, so that a signal during start-up is a stop too (honoured after the first
/// step). Under <c>mpirun</c> every rank has its own; mpirun forwards the signal to all of them, and the pipeline's
/// agreement makes them stop after the same step even if the signal reaches them at different moments, or only some.
/// A process that starts with SIGINT ignored (started in the background by a shell without job control) keeps ignoring
/// it, as .NET leaves that disposition alone.
/// </remarks>
internal sealed class StopSignals : IDisposable
{
    private readonly List<PosixSignalRegistration> _registrations = new();
    private int _signals;

    public StopSignals()
    {
        Add(PosixSignal.SIGINT, Output.ExitCodes.Interrupted);
        Add(PosixSignal.SIGTERM, Output.ExitCodes.Terminated);
    }

    /// <summary>Given to the pipeline (<see cref="PipelineOptions.Stop"/>); set by the first signal.</summary>
    public StopRequest Request { get; } = new();

    /// <summary>The process's exit code once the ranks agreed to stop (130 or 143); null if they did not.</summary>
    public int? ExitCode => Request.Agreed;

    /// <summary>The signal of an exit code: SIGINT for 130, SIGTERM for 143.</summary>
    public static string Name(int code) => code == Output.ExitCodes.Terminated ? "SIGTERM" : "SIGINT";

    private void Add(PosixSignal signal, int code)
    {
        try
        {
            _registrations.Add(PosixSignalRegistration.Create(signal, context => OnSignal(context, code)));
        }
        catch (PlatformNotSupportedException)
        {
            // Not every signal exists everywhere (e.g. SIGTERM on some platforms): the default action stays.
        }
    }

    private void OnSignal(PosixSignalContext context, int code)
    {
        string name = Name(code);
        if (Interlocked.Increment(ref _signals) > 1)
        {
            // Second signal: now. No managed clean-up either (a stuck native call or MPI could hold it up), and the note
            // goes straight to the standard error stream: Console.Error's lock may be held by a thread that is stuck.
            try
            {
                using var stderr = Console.OpenStandardError();
                stderr.Write(System.Text.Encoding.UTF8.GetBytes($"{Output.Errors.Prefix}{name} again: exiting at once ({code}).\n"));
            }
            catch (IOException)
            {
            }
            ExitNow(code);
        }
        context.Cancel = true;
        Request.Request(code); // first, so that nothing below can delay it
        Console.Error.WriteLine($"{Output.Errors.Prefix}{name}: stopping after the current step; send it again to exit at once.");
    }

    private static void ExitNow(int code)
    {
        if (OperatingSystem.IsWindows()) Environment.Exit(code);
        Exit(code);
    }

    [DllImport("libc", EntryPoint = "_exit")]
    private static extern void Exit(int status);

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
        _registrations.Clear();
    }
}

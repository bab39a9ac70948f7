using System.CommandLine;
using PipeSharp.Cli.Options;
using PipeSharp.Cli.Output;
using PipeSharp.Mpi;

namespace PipeSharp.Cli.Commands;

/// <summary>
/// The command line's side of a run under mpirun: MPI set up for this process, only rank 0 printing to the console
/// (every rank prints its errors, prefixed with its rank), each rank's log file on request, and, when this rank
/// failed, a short pause before exiting so that the others can say why they stop before mpirun ends them.
/// </summary>
internal sealed class MpiRun : IDisposable
{
    private readonly TextWriter _stdout = Console.Out;
    private readonly TextWriter _stderr = Console.Error;
    // The log is written by the main thread (standard output and error both go to it) and by the signal handlers'
    // thread: a StreamWriter is not thread-safe (concurrent lines left NUL bytes in the file), so it is used through
    // one synchronized wrapper.
    private readonly TextWriter? _log;
    private int? _exitCode;

    private MpiRun(MpiCluster cluster, string? logDirectory)
    {
        Cluster = cluster;
        if (logDirectory != null)
        {
            Directory.CreateDirectory(logDirectory);
            _log = TextWriter.Synchronized(new StreamWriter(Path.Combine(logDirectory, $"rank-{cluster.Rank}.log"), append: false) { AutoFlush = true });
            _log.WriteLine($"rank {cluster.Rank} of {cluster.Size} on {cluster.HostName}, process {Environment.ProcessId}, started {DateTime.UtcNow:O}");
        }
        var console = cluster.IsRoot ? _stdout : TextWriter.Null;
        Console.SetOut(_log == null ? console : new TeeWriter(console, _log));
        Console.SetError(_log == null ? _stderr : new TeeWriter(_stderr, _log));
        Errors.Prefix = $"rank {cluster.Rank}: ";
        Current = this;
    }

    public MpiCluster Cluster { get; }

    /// <summary>The run under way in this process, if mpirun started it.</summary>
    private static MpiRun? Current { get; set; }

    /// <summary>
    /// An output file of this rank: as given on rank 0 (or without mpirun); on other ranks, for a file of this rank's
    /// own view (a timeline), the name with <c>.rank-N</c> before its extension, and otherwise none (rank 0 writes it).
    /// </summary>
    public static string? OutputFile(string? path, bool perRank)
    {
        if (path is null || Current is not { Cluster.IsRoot: false } run) return path;
        if (!perRank) return null;
        string extension = Path.GetExtension(path);
        return path[..^extension.Length] + $".rank-{run.Cluster.Rank}" + extension;
    }

    /// <summary>Sets up MPI if this process was started by mpirun; null otherwise.</summary>
    public static MpiRun? Start(ParseResult args)
    {
        string? logs = args.GetValue(ClusterOptions.LogDirectory);
        if (!MpiCluster.IsLaunchedByMpirun)
        {
            if (logs != null) throw new ArgumentException("--log-dir is for runs under mpirun (one log per rank); without mpirun everything prints here.");
            return null;
        }
        var cluster = MpiCluster.Initialize(TimeSpan.FromSeconds(args.GetValue(ClusterOptions.PeerTimeout)));
        return new MpiRun(cluster, logs);
    }

    /// <summary>
    /// Runs a command's body, under mpirun inside MPI's set-up; errors are reported while this rank's log is still open.
    /// </summary>
    public static int Execute(ParseResult args, Func<MpiRun?, int> body)
    {
        using var run = Start(args);
        try
        {
            int code = body(run);
            if (run != null) run._exitCode = code;
            return code;
        }
        catch (Exception e) when (run != null)
        {
            // Whatever failed here, the other ranks must not wait for this one (a pipeline does this itself for its
            // steps; this covers the rest, such as saving a checkpoint).
            run.Log($"failure noticed {DateTime.UtcNow:O}");
            run.Cluster.ReportFailure(e);
            if (!Errors.IsExpected(e)) throw;
            return Errors.Report(e);
        }
    }

    /// <summary>Writes a line to this rank's log (not the console).</summary>
    public void Log(string line) => _log?.WriteLine(line);

    public void Dispose()
    {
        // After a failure, wait a little before exiting: the first rank to exit makes mpirun kill the rest at once, and
        // the others (told by a notice, or finding the same lost peer within a heartbeat) should first say why they stop.
        if (Cluster.Failure != null) Thread.Sleep(TimeSpan.FromSeconds(1.5));
        // The exit code too, so that the log tells a stop from a finished run.
        _log?.WriteLine($"rank {Cluster.Rank} {(Cluster.Failure == null ? "finished" : "stopped after a failure")}" +
                        $"{(_exitCode is { } code ? $", exit code {code}" : "")} {DateTime.UtcNow:O}");
        Cluster.Dispose();
        // A stop by a signal (130/143): make mpirun report that code (it may report 0 after forwarding a signal).
        if (Cluster.Failure == null && _exitCode is ExitCodes.Interrupted or ExitCodes.Terminated) MpiCluster.KeepExitCodeForMpirun();
        Current = null;
        Console.SetOut(_stdout);
        Console.SetError(_stderr);
        _log?.Dispose();
    }

    private sealed class TeeWriter(TextWriter first, TextWriter second) : TextWriter
    {
        public override System.Text.Encoding Encoding => first.Encoding;
        public override void Write(char value) { first.Write(value); second.Write(value); }
        public override void Write(string? value) { first.Write(value); second.Write(value); }
        public override void WriteLine(string? value) { first.WriteLine(value); second.WriteLine(value); }
        public override void Flush() { first.Flush(); second.Flush(); }
    }
}

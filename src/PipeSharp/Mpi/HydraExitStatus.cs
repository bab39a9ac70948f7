using System.Diagnostics;

namespace PipeSharp.Mpi;

/// <summary>
/// Makes MPICH's mpirun (Hydra 4.0.x) report this process's exit code after a signal it forwarded.
/// </summary>
/// <remarks>
/// Once Hydra's proxy has forwarded a signal to its processes it marks them as being force-cleaned-up, and from then on
/// keeps only the exit statuses it collected while some process's standard output or error was still open: it reaps a
/// process (<c>waitpid(WNOHANG)</c>) after an event on one of those pipes, and reports every process it reaps later,
/// once all pipes are closed, as 0 (src/pm/hydra/pm/pmiserv/pmip.c). A process's pipes close when it exits, a moment
/// before it can be reaped, so the last process of each proxy always came back as 0 and mpirun returned the ranks' code
/// only when it happened to reap an earlier one in time (36 of 40 measured runs with two ranks).
/// <para>
/// The fix: just before the process exits, a small shell child takes over its standard output and error. It waits until
/// the process has ended (its state in /proc is zombie), then closes the output (an event while the error stream is
/// still open: the proxy reaps the process now and keeps its status), and closes the error stream 0.2 s later. Nothing
/// is printed; mpirun ends that much later. Bounded: the child gives up waiting after 10 s.
/// </para>
/// </remarks>
internal static class HydraExitStatus
{
    // $1: the process to wait for. Its standard error is kept open on fd 3 and pointed at /dev/null, so that nothing this
    // script runs can print. A second SIGINT/SIGTERM that mpirun forwards to the process group must not end it early.
    private const string Script = """
        trap '' INT TERM
        exec </dev/null 3>&2 2>/dev/null
        i=0
        while [ $i -lt 500 ]; do
          read -r s </proc/$1/stat || break
          case ${s##*) } in Z*|X*) break;; esac
          sleep 0.02
          i=$((i+1))
        done
        exec >/dev/null
        sleep 0.2
        """;

    /// <summary>Starts the child (only on Linux under mpirun); false if it could not be started (nothing else changes).</summary>
    public static bool Keep()
    {
        if (!OperatingSystem.IsLinux() || !MpiCluster.IsLaunchedByMpirun || !File.Exists("/bin/sh")) return false;
        try
        {
            var info = new ProcessStartInfo("/bin/sh") { UseShellExecute = false }; // inherits stdout and stderr
            foreach (string a in new[] { "-c", Script, "pipesharp-exit-status", Environment.ProcessId.ToString() })
                info.ArgumentList.Add(a);
            using var child = Process.Start(info);
            return child != null;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException or IOException)
        {
            return false;
        }
    }
}

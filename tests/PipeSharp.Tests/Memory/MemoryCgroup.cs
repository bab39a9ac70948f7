using System.Diagnostics;
using System.Text;

namespace PipeSharp.Tests.Memory;

/// <summary>
/// A child memory cgroup (the v1 memory controller at /sys/fs/cgroup/memory) with a limit, for running a program
/// under a memory cap the kernel enforces: <c>memory.limit_in_bytes</c>, and <c>memory.memsw.limit_in_bytes</c> where
/// swap accounting exists (so the cap cannot be escaped into swap). A program is started inside it by a shell that
/// writes its own pid into <c>cgroup.procs</c> before it runs the program, so nothing runs outside the cap. Disposing
/// kills what is left in the group and removes it.
/// </summary>
internal sealed class MemoryCgroup : IDisposable
{
    private const string Controller = "/sys/fs/cgroup/memory";

    private MemoryCgroup(string path, long limit)
    {
        Path = path;
        LimitBytes = limit;
    }

    /// <summary>The group's folder.</summary>
    public string Path { get; }

    /// <summary>Its memory limit.</summary>
    public long LimitBytes { get; }

    /// <summary>
    /// Why a group cannot be made here (not Linux, no v1 memory controller, not root), or null if it can.
    /// </summary>
    public static string? WhyNot()
    {
        if (!OperatingSystem.IsLinux()) return "memory cgroups are a Linux feature.";
        if (!File.Exists(System.IO.Path.Combine(Controller, "memory.limit_in_bytes")))
            return $"no cgroup v1 memory controller at {Controller} (cgroup v2 or a container without it).";
        if (Environment.UserName != "root" && !CanWrite(Controller))
            return $"creating a cgroup under {Controller} needs root (this is {Environment.UserName}).";
        return null;
    }

    /// <summary>Makes a group limited to <paramref name="limitBytes"/>, or returns null with the reason in <paramref name="whyNot"/>.</summary>
    public static MemoryCgroup? TryCreate(long limitBytes, out string? whyNot) =>
        TryCreate($"pipesharp-test-{Environment.ProcessId}-{Guid.NewGuid():N}"[..40], limitBytes, out whyNot);

    /// <summary>
    /// One group per MPI rank, each limited to <paramref name="limitBytes"/>, named <c>PREFIX-0</c>, <c>PREFIX-1</c>, ...
    /// (see <see cref="PerRankCommand"/>); null with the reason if they cannot be made.
    /// </summary>
    public static IReadOnlyList<MemoryCgroup>? TryCreatePerRank(int ranks, long limitBytes, out string prefix, out string? whyNot)
    {
        prefix = $"pipesharp-test-{Environment.ProcessId}-{Guid.NewGuid():N}"[..36];
        var groups = new List<MemoryCgroup>();
        for (int r = 0; r < ranks; r++)
        {
            if (TryCreate($"{prefix}-{r}", limitBytes, out whyNot) is not { } g)
            {
                foreach (var made in groups) made.Dispose();
                return null;
            }
            groups.Add(g);
        }
        whyNot = null;
        return groups;
    }

    /// <summary>
    /// The shell script (for <c>/bin/sh -c</c>) an MPI rank runs so that it joins its own group before the program
    /// starts: MPICH's launcher sets <c>PMI_RANK</c> in each process.
    /// </summary>
    public static string PerRankScript(string prefix, string program, string arguments) =>
        $"echo $$ > {Controller}/{prefix}-$PMI_RANK/cgroup.procs && exec {program} {arguments}";

    private static MemoryCgroup? TryCreate(string name, long limitBytes, out string? whyNot)
    {
        whyNot = WhyNot();
        if (whyNot != null) return null;
        string path = System.IO.Path.Combine(Controller, name);
        try
        {
            Directory.CreateDirectory(path);
            File.WriteAllText(System.IO.Path.Combine(path, "memory.limit_in_bytes"), limitBytes.ToString());
            string swap = System.IO.Path.Combine(path, "memory.memsw.limit_in_bytes");
            if (File.Exists(swap)) File.WriteAllText(swap, limitBytes.ToString());
            return new MemoryCgroup(path, limitBytes);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            whyNot = $"could not create the cgroup {path}: {e.Message}";
            try { Directory.Delete(path); } catch (Exception) { }
            return null;
        }
    }

    /// <summary>Processes the kernel's OOM killer killed in the group (the oom_kill line of memory.oom_control; 0 if the kernel does not count).</summary>
    public long OomKills =>
        File.ReadAllLines(System.IO.Path.Combine(Path, "memory.oom_control")).Select(l => l.Split(' '))
            .Where(p => p.Length == 2 && p[0] == "oom_kill").Select(p => long.Parse(p[1])).FirstOrDefault();

    /// <summary>The most memory the group has used (memory.max_usage_in_bytes).</summary>
    public long MaxUsageBytes => long.Parse(File.ReadAllText(System.IO.Path.Combine(Path, "memory.max_usage_in_bytes")).Trim());

    /// <summary>Runs <paramref name="program"/> with <paramref name="arguments"/> inside the group; returns its exit code and output.</summary>
    public (int ExitCode, string Output) Run(string program, string arguments, TimeSpan timeout)
    {
        string procs = System.IO.Path.Combine(Path, "cgroup.procs");
        var info = new ProcessStartInfo("/bin/sh", ["-c", $"echo $$ > '{procs}' && exec {program} {arguments}"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.Environment["CI"] = "true";
        var output = new StringBuilder();
        using var process = new Process { StartInfo = info };
        process.OutputDataReceived += (_, e) => { if (e.Data != null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (output) output.AppendLine(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            lock (output) output.AppendLine($"(killed by the test after {timeout.TotalSeconds:0} s)");
        }
        process.WaitForExit(); // the output's end
        lock (output) return (process.ExitCode, output.ToString());
    }

    /// <summary>Kills what is left in the group and removes it.</summary>
    public void Dispose()
    {
        try
        {
            foreach (var line in File.ReadAllLines(System.IO.Path.Combine(Path, "cgroup.procs")))
                if (int.TryParse(line, out int pid))
                    try { Process.GetProcessById(pid).Kill(); } catch (Exception) { }
            for (int attempt = 0; attempt < 50; attempt++)
            {
                try { Directory.Delete(Path); return; } // rmdir: a cgroup's files go with it
                catch (IOException) { Thread.Sleep(100); }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private static bool CanWrite(string folder)
    {
        try
        {
            string probe = System.IO.Path.Combine(folder, $"pipesharp-probe-{Guid.NewGuid():N}");
            Directory.CreateDirectory(probe);
            Directory.Delete(probe);
            return true;
        }
        catch (Exception) { return false; }
    }
}

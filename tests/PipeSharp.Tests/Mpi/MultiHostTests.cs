using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace PipeSharp.Tests.Mpi;

/// <summary>
/// A test that simulates two machines with network namespaces (see <see cref="TwoHosts"/>); skipped, with the reason,
/// where that is not possible: without mpirun.mpich, without root, without iproute2's ip, unshare or hostname.
/// </summary>
public sealed class NetnsFactAttribute : FactAttribute
{
    public NetnsFactAttribute()
    {
        if (MpiJob.Launcher is null) Skip = "mpirun.mpich is not installed (apt-get install mpich; .ci/run installs it).";
        else if (!OperatingSystem.IsLinux()) Skip = "network namespaces are a Linux feature.";
        else if (TwoHosts.geteuid() != 0) Skip = "simulating two hosts needs root (it creates network namespaces and a veth pair).";
        else if (TwoHosts.Ip is null) Skip = "ip (iproute2) is not installed: apt-get install iproute2.";
        else if (TwoHosts.Find("unshare") is null) Skip = "unshare (util-linux) is not installed: apt-get install util-linux.";
        else if (TwoHosts.Find("hostname") is null) Skip = "hostname is not installed: apt-get install hostname.";
    }
}

/// <summary>
/// Pipeline ranks on two "machines": two network namespaces joined by a veth pair, each with its own IPC namespace (so
/// that MPI cannot use shared memory between them and every message between the hosts crosses the veth link) and its
/// own host name. Then the link between them is cut in the middle of training.
/// </summary>
[Collection(MpiCollection.Name)]
public class MultiHostTests(ITestOutputHelper output)
{
    private const int PeerTimeout = 5;
    private static readonly TimeSpan Margin = TimeSpan.FromSeconds(5);

    // The built-in sorting task's GPT, given explicitly: the run that resumes must use the same model options, and the
    // traffic check below counts the activations it sends: batch 16 x context 11 tokens x width 64 float32 values.
    private const string Gpt = "train --model gpt --task sorting --layers 2 --width 64 --batch-size 16 --eval-batches 2";
    private const long ActivationBytesPerStep = 16 * 11 * 64 * sizeof(float);

    [NetnsFact]
    public void A_link_cut_between_two_hosts_stops_every_rank_within_the_peer_timeout_each_naming_a_rank_across_the_link_and_the_last_checkpoint_resumes()
    {
        using var folder = new TempFolder();
        string ck = Path.Combine(folder.Path, "ck"), logs = Path.Combine(folder.Path, "logs");
        var mpirunOutput = new StringBuilder();
        var hosts = new TwoHosts();
        Process? mpirun = null;
        int lastCheckpoint;
        try
        {
            hosts.Create();
            // Ranks 0, 1 on host 1 and 2, 3 on host 2: one pipeline of 4 stages, the link between stages 1 and 2.
            mpirun = hosts.StartMpirun(folder.Path, 2,
                $"dotnet {MpiJob.Cli} {Gpt} --stages 4 --steps 100000 --checkpoint {ck} --checkpoint-every 5 " +
                $"--peer-timeout {PeerTimeout} --log-dir {logs}", mpirunOutput);
            string Diagnostics() => $"mpirun printed:\n{Locked(mpirunOutput)}\n{AllLogs(logs)}";

            // Training is past a checkpoint: one exists and rank 0 finished a later step.
            var clock = Stopwatch.StartNew();
            int stepDone;
            while (true)
            {
                int? saved = NewestCheckpoint(ck);
                stepDone = LastStep(ReadLog(logs, 0));
                if (saved is { } s && stepDone > s) break;
                if (mpirun.HasExited) Assert.Fail($"mpirun ended before the link was cut (exit code {mpirun.ExitCode}):\n{Diagnostics()}");
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(40), $"no checkpoint and later step within 40 s:\n{Diagnostics()}");
                Thread.Sleep(100);
            }
            output.WriteLine($"training past a checkpoint {clock.Elapsed.TotalSeconds:F1} s after mpirun started");
            var ranks = Enumerable.Range(0, 4).Select(r => RankInfo.Parse(r, ReadLog(logs, r))).ToArray();
            Assert.Equal([hosts.Name1, hosts.Name1, hosts.Name2, hosts.Name2], ranks.Select(r => r.Host));

            // Every message between the hosts crossed the veth link: at least each finished step's activations one way
            // (host 1 -> host 2) and their gradients the other way.
            var (rx, tx) = hosts.LinkBytes();
            output.WriteLine($"{stepDone} steps done, newest checkpoint step {NewestCheckpoint(ck)}; veth of host 1: received {rx:N0} bytes, sent {tx:N0} bytes");
            long expected = stepDone * ActivationBytesPerStep;
            Assert.True(tx >= expected && rx >= expected,
                $"only {tx:N0} bytes left host 1 and {rx:N0} arrived over the veth link in {stepDone} steps (at least {expected:N0} each way expected): " +
                "the ranks talk through shared memory, not through the simulated network");

            // Cut the link.
            var cut = DateTime.UtcNow;
            var sinceCut = Stopwatch.StartNew();
            hosts.CutLink();

            // Every rank process ends within the peer timeout and a margin (mpirun does not: it never hears of the end
            // of the ranks on the other side of the link).
            var exited = new TimeSpan?[4];
            while (exited.Any(e => e is null) && sinceCut.Elapsed < TimeSpan.FromSeconds(PeerTimeout) + Margin)
            {
                for (int r = 0; r < 4; r++)
                    if (exited[r] is null && !IsRunning(ranks[r].Pid, logs)) exited[r] = sinceCut.Elapsed;
                Thread.Sleep(50);
            }
            for (int r = 0; r < 4; r++)
                output.WriteLine($"rank {r} on {ranks[r].Host}: exited {(exited[r] is { } e ? $"{e.TotalSeconds:F1} s" : "NOT")} after the cut");
            Assert.True(exited.All(e => e is not null),
                $"ranks {string.Join(", ", Enumerable.Range(0, 4).Where(r => exited[r] is null))} still ran " +
                $"{(TimeSpan.FromSeconds(PeerTimeout) + Margin).TotalSeconds:F0} s after the link was cut:\n{Diagnostics()}");

            // Each rank noticed within the timeout (not before the cut) and named a rank on the other host.
            foreach (var rank in ranks)
            {
                string log = ReadLog(logs, rank.Rank);
                var noticed = Noticed(log);
                Assert.True(noticed is not null, $"rank {rank.Rank}'s log has no 'failure noticed':\n{log}");
                var delay = noticed.Value - cut;
                output.WriteLine($"rank {rank.Rank}: noticed {delay.TotalSeconds:F1} s after the cut: {ErrorLine(log, rank.Rank)}");
                Assert.True(delay >= TimeSpan.Zero && delay <= TimeSpan.FromSeconds(PeerTimeout) + Margin,
                    $"rank {rank.Rank} noticed the failure {delay.TotalSeconds:F1} s after the cut:\n{log}");
                // "rank 1: error: rank 1 on ps-t1-X lost rank 2 on ps-t2-X (replica 0, rank 2: stage 2): it has sent nothing for 5.3 s
                // (...)": the rank that found the peer silent is this one, or another rank of this host that told it.
                var lost = Regex.Match(log, $@"^rank {rank.Rank}: error: rank (\d+) on (\S+) lost rank (\d+) on (\S+) \(replica 0, rank \d+: stage (\d+)\): " +
                    $@"it has sent nothing for (\d+\.\d) s \(peer timeout {PeerTimeout} s\), so that process stopped or the network link to it is down\.$",
                    RegexOptions.Multiline);
                Assert.True(lost.Success, $"rank {rank.Rank} did not report a lost peer:\n{log}");
                var finder = ranks[int.Parse(lost.Groups[1].Value)];
                Assert.True(finder.Host == lost.Groups[2].Value && finder.Host == rank.Host, $"wrong rank or host in the report of rank {rank.Rank} on {rank.Host}:\n{log}");
                var peer = ranks[int.Parse(lost.Groups[3].Value)];
                Assert.Equal(peer.Host, lost.Groups[4].Value);
                Assert.Equal(peer.Rank, int.Parse(lost.Groups[5].Value)); // one replica of 4 stages (1F1B): stage s runs on rank s
                Assert.True(peer.Host != rank.Host, $"rank {rank.Rank} on {rank.Host} named rank {peer.Rank}, on the same host, as lost:\n{log}");
                Assert.True(double.Parse(lost.Groups[6].Value, CultureInfo.InvariantCulture) >= PeerTimeout, lost.Value); // printed to 0.1 s
                // Not asserted: "rank N stopped after a failure" (the end of the 1.5 s pause before exiting). When the
                // first rank of a host exits, that host's Hydra proxy kills its other ranks (SIGKILL to their process
                // groups), and one that noticed the loss later may still be pausing.
                if (!log.Contains($"rank {rank.Rank} stopped after a failure "))
                    output.WriteLine($"rank {rank.Rank}: killed by its host's proxy before the end of its pause (no 'stopped after a failure')");
            }
            lastCheckpoint = NewestCheckpoint(ck) ?? 0;
        }
        finally
        {
            // mpirun never ends by itself: it waits for the proxy of host 2, which it can no longer reach.
            if (mpirun is { HasExited: false }) mpirun.Kill(entireProcessTree: true);
            hosts.Dispose();
            mpirun?.WaitForExit(5000);
        }
        Assert.True(mpirun.HasExited, "mpirun still runs");
        mpirun.Dispose();
        Assert.Empty(TwoHosts.Leftovers(hosts));
        Assert.Empty(MpiJob.Processes(folder.Path));

        // The newest checkpoint (written by ranks on both hosts) resumes on one host, with 2 stages.
        var resumed = MpiJob.Run(2, $"{Gpt} --stages 2 --steps {lastCheckpoint + 5} --checkpoint {ck} --resume", TimeSpan.FromMinutes(2));
        output.WriteLine($"resumed from step {lastCheckpoint} with 2 ranks: {resumed.Elapsed.TotalSeconds:F1} s, exit code {resumed.ExitCode}");
        Assert.True(resumed.ExitCode == 0, resumed.Output);
        Assert.Contains($"resumed from step {lastCheckpoint} ", resumed.Output);
        Assert.Matches($@"(?m)^step\s+{lastCheckpoint + 5}\s+loss", resumed.Output);
    }

    private sealed record RankInfo(int Rank, string Host, int Pid)
    {
        // "rank 2 of 4 on ps-t2-1a2b, process 12345, started 2026-..."
        public static RankInfo Parse(int rank, string log)
        {
            var first = Regex.Match(log, $@"^rank {rank} of 4 on (\S+), process (\d+), started ");
            Assert.True(first.Success, $"rank {rank}'s log does not start with its host and process:\n{log}");
            return new RankInfo(rank, first.Groups[1].Value, int.Parse(first.Groups[2].Value));
        }
    }

    private static string Locked(StringBuilder text) { lock (text) return text.ToString(); }

    private static string ReadLog(string logs, int rank)
    {
        try
        {
            using var stream = new FileStream(Path.Combine(logs, $"rank-{rank}.log"), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            return new StreamReader(stream).ReadToEnd();
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return "";
        }
    }

    private static string AllLogs(string logs) =>
        string.Join("\n", Enumerable.Range(0, 4).Select(r => $"--- rank-{r}.log:\n{ReadLog(logs, r)}"));

    private static int LastStep(string log) =>
        Regex.Matches(log, @"^step\s+(\d+)\s+loss", RegexOptions.Multiline).Select(m => int.Parse(m.Groups[1].Value)).DefaultIfEmpty(0).Max();

    private static int? NewestCheckpoint(string ck) =>
        Directory.Exists(ck)
            ? Directory.GetDirectories(ck, "step-*").Select(d => Regex.Match(Path.GetFileName(d), @"^step-(\d+)$"))
                .Where(m => m.Success).Select(m => (int?)int.Parse(m.Groups[1].Value)).Max()
            : null;

    private static DateTime? Noticed(string log) =>
        Regex.Match(log, @"failure noticed (\S+)") is { Success: true } m
            ? DateTime.Parse(m.Groups[1].Value, null, DateTimeStyles.RoundtripKind)
            : null;

    private static string ErrorLine(string log, int rank) =>
        log.Split('\n').FirstOrDefault(l => l.StartsWith($"rank {rank}: error: "))?.TrimEnd() ?? "(no error line)";

    // The namespaces share the root namespace's process IDs (only the network, IPC and host name are private).
    // A zombie has exited (its parent, Hydra's proxy, may not have reaped it yet).
    private static bool IsRunning(int pid, string marker)
    {
        try
        {
            if (!File.ReadAllText($"/proc/{pid}/cmdline").Contains(marker)) return false; // gone, and the PID reused
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..][0] != 'Z';
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}

/// <summary>
/// Two simulated hosts: network namespaces ps-t1-X and ps-t2-X (X random) joined by a veth pair, addresses 10.200.N.1 and
/// 10.200.N.2 (N random), created by Mpi/netns/hosts-up.sh and removed, with every process inside them, by
/// Mpi/netns/hosts-down.sh. mpirun runs in host 1 and starts the ranks of host 2 through Mpi/netns/fake-ssh.
/// </summary>
internal sealed class TwoHosts : IDisposable
{
    [DllImport("libc")]
    internal static extern uint geteuid();

    private static readonly string Scripts = Path.Combine(AppContext.BaseDirectory, "Mpi", "netns");

    public static string? Find(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Concat(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
            .Where(d => d.Length > 0).Select(d => Path.Combine(d, program)).FirstOrDefault(File.Exists);

    public static readonly string? Ip = Find("ip");

    public TwoHosts()
    {
        string id = Convert.ToHexString(BitConverter.GetBytes(Random.Shared.Next())).ToLowerInvariant()[..6];
        Name1 = $"ps-t1-{id}";
        Name2 = $"ps-t2-{id}";
        Device1 = $"pst{id}a";
        Device2 = $"pst{id}b";
        Network = $"10.200.{Random.Shared.Next(1, 255)}";
    }

    public string Name1 { get; }
    public string Name2 { get; }
    public string Device1 { get; }
    public string Device2 { get; }
    public string Network { get; }
    public string Address1 => $"{Network}.1";
    public string Address2 => $"{Network}.2";

    public void Create() => Run("sh", Path.Combine(Scripts, "hosts-up.sh"), Name1, Name2, Device1, Device2, Network);

    /// <summary>Starts mpirun.mpich inside host 1 (with its own IPC namespace and host name): <paramref name="perHost"/> ranks on each host.</summary>
    public Process StartMpirun(string folder, int perHost, string command, StringBuilder output)
    {
        // Hydra runs the launcher directly: a copy that is surely executable.
        string ssh = Path.Combine(folder, "fake-ssh");
        File.Copy(Path.Combine(Scripts, "fake-ssh"), ssh, overwrite: true);
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(ssh, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string hostfile = Path.Combine(folder, "hosts");
        File.WriteAllText(hostfile, $"{Address1}:{perHost}\n{Address2}:{perHost}\n");
        // Host 1's ranks are forked by mpirun itself (its address is local), so mpirun needs host 1's IPC namespace too.
        var info = new ProcessStartInfo(Ip!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { "netns", "exec", Name1, "unshare", "--uts", "--ipc", "sh", "-c",
                     $"hostname {Name1}; exec {MpiJob.Launcher} -launcher ssh -launcher-exec {ssh} -f {hostfile} -n {2 * perHost} {command}" })
            info.ArgumentList.Add(arg);
        info.Environment["CI"] = "true";
        info.Environment["PIPESHARP_NETNS_HOSTS"] = $"{Address1}={Name1} {Address2}={Name2}";
        return MpiJob.StartCollecting(info, output);
    }

    /// <summary>Bytes received and sent by host 1's end of the veth link.</summary>
    public (long Received, long Sent) LinkBytes()
    {
        using var json = JsonDocument.Parse(Run(Ip!, "-n", Name1, "-j", "-s", "link", "show", "dev", Device1));
        var stats = json.RootElement[0].GetProperty("stats64");
        return (stats.GetProperty("rx").GetProperty("bytes").GetInt64(), stats.GetProperty("tx").GetProperty("bytes").GetInt64());
    }

    public void CutLink() => Run(Ip!, "-n", Name1, "link", "set", "dev", Device1, "down");

    /// <summary>Kills every process in both namespaces and deletes them (the veth pair goes with them).</summary>
    public void Dispose() => Run("sh", Path.Combine(Scripts, "hosts-down.sh"), Name1, Name2);

    /// <summary>The namespaces of <paramref name="hosts"/> that still exist, and the processes still in them.</summary>
    public static List<string> Leftovers(TwoHosts hosts)
    {
        string list = Run(Ip!, "netns", "list");
        return new[] { hosts.Name1, hosts.Name2 }.Where(n => Regex.IsMatch(list, $@"^{Regex.Escape(n)}\b", RegexOptions.Multiline))
            .Select(n => $"{n}: processes {Run(Ip!, "netns", "pids", n).Trim()}").ToList();
    }

    private static string Run(string program, params string[] args)
    {
        var info = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(TimeSpan.FromSeconds(30))) { process.Kill(); Assert.Fail($"{program} {string.Join(' ', args)} did not finish within 30 s"); }
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', args)} failed (exit code {process.ExitCode}): {stdout}{stderr.Result}");
        return stdout;
    }
}

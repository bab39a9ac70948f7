using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using PipeSharp.Checkpoints;

namespace PipeSharp.Tests.Mpi;

/// <summary>
/// Ctrl+C (SIGINT) and SIGTERM sent to mpirun, which forwards them to every rank: the ranks agree on the step they stop
/// after, each writes its part of that step's checkpoint, MPI finishes cleanly, and every rank exits with 130 / 143.
/// A second SIGTERM ends the ranks at once.
/// </summary>
/// <remarks>
/// After forwarding a signal, mpirun.mpich 4.0.2 reports 0 for a rank it reaps too late; each rank's graceful stop makes
/// it reap in time (<c>MpiCluster.KeepExitCodeForMpirun</c>, see docs/distributed.md), so mpirun's exit code must be
/// exactly 130 / 143. After a second signal the ranks end at once without that, and mpirun may return 0.
/// </remarks>
[Collection(MpiCollection.Name)]
public class MpiStopTests
{
    private static readonly TimeSpan Start = TimeSpan.FromSeconds(120), Stop = TimeSpan.FromSeconds(40);

    [MpiFact]
    public void Ctrl_c_to_mpirun_stops_both_ranks_after_the_same_step_with_a_whole_checkpoint_and_exit_code_130() =>
        StopsGracefully(Signals.Interrupt, "SIGINT", 130);

    [MpiFact]
    public void Sigterm_to_mpirun_stops_both_ranks_after_the_same_step_with_a_whole_checkpoint_and_exit_code_143() =>
        StopsGracefully(Signals.Terminate, "SIGTERM", 143);

    private static void StopsGracefully(int signal, string name, int code)
    {
        using var folder = new TempFolder();
        string ck = Path.Combine(folder.Path, "ck"), logs = Path.Combine(folder.Path, "logs");
        var output = new StringBuilder();
        using var job = TrainUntilSignalled(ck, logs, output, job => Signals.Send(job.Id, signal), name);
        string said = $"mpirun exited with {job.ExitCode} and printed:\n{output}\nrank logs:\n" +
                      string.Join("\n", Directory.GetFiles(logs).Order().Select(f => $"--- {Path.GetFileName(f)}\n{File.ReadAllText(f)}"));
        Assert.True(job.ExitCode == code, said);
        // Every rank stopped after the same step, finished MPI normally and exited with the signal's code.
        var stopped = new List<int>();
        foreach (int rank in new[] { 0, 1 })
        {
            string log = File.ReadAllText(Path.Combine(logs, $"rank-{rank}.log"));
            var match = Regex.Match(log, $@"^stopped after step (\d+) \({name}\)", RegexOptions.Multiline);
            Assert.True(match.Success, said);
            stopped.Add(int.Parse(match.Groups[1].Value));
            Assert.Matches($@"rank {rank} finished, exit code {code} \S+\s*$", log);
        }
        Assert.True(stopped[0] == stopped[1], said);
        int step = stopped[0];
        Assert.Equal(step, StopSignalTests.LastStep(output.ToString())); // rank 0 printed that step last
        // One checkpoint, of that step, with both ranks' stages, loadable (every file's length and checksum verified).
        Assert.Equal([step], CheckpointStore.Steps(ck));
        using (var loaded = CheckpointStore.Load(ck))
        {
            Assert.Equal(step, loaded.Manifest.Step);
            Assert.Equal(Enumerable.Range(0, loaded.Manifest.Balance.Sum()).Select(i => $"layer-{i}.safetensors"), loaded.Manifest.Files.Select(f => f.Name)); // one file per layer
        }
        Assert.DoesNotContain("BAD TERMINATION", output.ToString());
        Assert.Empty(MpiJob.Processes(logs));
    }

    [MpiFact]
    public void Sigterm_to_one_rank_alone_stops_every_rank_after_the_same_step_and_mpirun_exits_with_143()
    {
        // What a cluster manager may do: signal one process of the job. The other rank learns of it in the next step's
        // all-reduce; without that agreement rank 1 would stop alone and rank 0 would wait for it.
        using var folder = new TempFolder();
        string ck = Path.Combine(folder.Path, "ck"), logs = Path.Combine(folder.Path, "logs");
        var output = new StringBuilder();
        using var job = TrainUntilSignalled(ck, logs, output, _ =>
        {
            int pid = int.Parse(Regex.Match(File.ReadAllText(Path.Combine(logs, "rank-1.log")), @"process (\d+)").Groups[1].Value);
            Signals.Send(pid, Signals.Terminate);
        }, "SIGTERM to rank 1");
        string log0 = File.ReadAllText(Path.Combine(logs, "rank-0.log")), log1 = File.ReadAllText(Path.Combine(logs, "rank-1.log"));
        string said = $"mpirun exited with {job.ExitCode} and printed:\n{output}\n--- rank 0\n{log0}\n--- rank 1\n{log1}";
        Assert.True(job.ExitCode == 143, said); // mpirun forwarded nothing, so it reports the ranks' codes as they are
        Assert.Contains("rank 1: SIGTERM: stopping", log1);
        Assert.DoesNotContain("SIGTERM: stopping", log0); // rank 0 got no signal: it stopped because rank 1 asked
        int step = StopSignalTests.LastStep(output.ToString());
        Assert.Contains($"stopped after step {step} (SIGTERM)", log0);
        Assert.Contains($"stopped after step {step} (SIGTERM)", log1);
        Assert.Matches(@"rank 0 finished, exit code 143 \S+\s*$", log0);
        Assert.Equal([step], CheckpointStore.Steps(ck));
    }

    // Starts a 2-rank training of the sorting task, signals it (as `signal` does) after 3 steps and waits until mpirun ends.
    private static Process TrainUntilSignalled(string ck, string logs, StringBuilder output, Action<Process> signal, string what)
    {
        var job = MpiJob.Start(2, $"train --model gpt --task sorting --stages 2 --steps 100000 --checkpoint {ck} --log-dir {logs}", output);
        try
        {
            MpiJob.WaitForOutput(job, output, o => StopSignalTests.LastStep(o) >= 3, Start, "printed 3 steps");
            signal(job);
            Assert.True(job.WaitForExit(Stop), $"mpirun still running {Stop.TotalSeconds:F0} s after {what}:\n{output}");
            job.WaitForExit();
            return job;
        }
        finally
        {
            if (!job.HasExited) job.Kill(entireProcessTree: true);
        }
    }

    [MpiFact]
    public void A_second_sigterm_to_mpirun_ends_every_rank_at_once_with_143()
    {
        using var folder = new TempFolder();
        string logs = Path.Combine(folder.Path, "logs");
        var output = new StringBuilder();
        // Steps long enough that a graceful stop (finish the step, save, evaluate) takes far longer than the moment between
        // the ranks' notes on the first signal and the second signal.
        using var job = MpiJob.Start(2, $"train --model gpt --task sorting --stages 2 --width 256 --layers 4 --batch-size 64 --steps 100000 " +
                                        $"--checkpoint {Path.Combine(folder.Path, "ck")} --log-dir {logs}", output);
        try
        {
            MpiJob.WaitForOutput(job, output, o => StopSignalTests.LastStep(o) >= 2, Start, "printed 2 steps");
            Signals.Send(job.Id, Signals.Terminate);
            // The second signal only once both ranks have taken the first (two pending signals of a kind merge into one).
            MpiJob.WaitForOutput(job, output, o => Regex.Matches(o, "SIGTERM: stopping after the current step").Count == 2, Stop, "taken the first SIGTERM");
            var clock = Stopwatch.StartNew();
            Signals.Send(job.Id, Signals.Terminate);
            Assert.True(job.WaitForExit(Stop), $"mpirun still running {Stop.TotalSeconds:F0} s after the second SIGTERM:\n{output}");
            clock.Stop();
            job.WaitForExit();
            string text = output.ToString();
            Assert.True(job.ExitCode == 143 || job.ExitCode == 0, $"mpirun exited with {job.ExitCode}:\n{text}");
            Assert.Contains("SIGTERM again: exiting at once (143).", text);
            Assert.DoesNotContain("interrupted after step", text);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"mpirun ended {clock.Elapsed.TotalSeconds:F1} s after the second SIGTERM:\n{text}");
            Assert.Empty(MpiJob.Processes(logs));
        }
        finally
        {
            if (!job.HasExited) job.Kill(entireProcessTree: true);
        }
    }
}

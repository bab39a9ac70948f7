using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace PipeSharp.Tests.Mpi;

/// <summary>
/// Pipelines across MPI processes on this machine (4 ranks on however many cores): the same results as in one
/// process, failures that stop every rank quickly and name the rank at fault, and checkpoints written by several
/// ranks that resume with another rank count.
/// </summary>
[Collection(MpiCollection.Name)]
public class MpiTests
{
    private static readonly TimeSpan Long = TimeSpan.FromMinutes(4);

    [MpiFact]
    public void Two_stages_by_two_replicas_on_four_ranks_match_single_device_training_with_the_tied_embedding_identical()
    {
        var run = MpiJob.Run(4, "verify --data-parallel 2 --steps 3", Long);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("4 MPI processes: 2 replicas x 2 ranks", run.Output);
        Assert.Matches(@"\d+ checks, 0 mismatches", run.Output);
        var gpt = GptLines(run.Output);
        Assert.Equal(15, gpt.Count); // 5 schedules x micro-batches 2, 4, 8
        Assert.All(gpt, line => Assert.EndsWith("ok  tied copies differ by 0e+00", line));
    }

    [MpiFact]
    public void Four_stages_on_four_ranks_match_single_device_training_with_interleaved_and_zero_bubble_schedules()
    {
        var run = MpiJob.Run(4, "verify --steps 3", Long);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("4 MPI processes: 1 replica x 4 ranks", run.Output);
        foreach (var schedule in new[] { "interleaved", "zb-h1", "zb-v" })
            Assert.Matches(new Regex($@"^mlp\s+adam\s+{schedule}\s+4\s+8\s+\S+\s+ok$", RegexOptions.Multiline), run.Output);
        Assert.All(GptLines(run.Output), line => Assert.EndsWith("ok  tied copies differ by 0e+00", line));
        Assert.Matches(@"\d+ checks, 0 mismatches", run.Output);
    }

    [MpiFact]
    public void A_rank_that_throws_stops_every_rank_within_seconds_and_each_names_it_with_its_stage_and_micro_batch()
    {
        using var logs = new TempFolder();
        var run = MpiJob.Run(4, $"train --model mlp --stages 4 --steps 1000 --inject-failure 2:3 --log-dir {logs.Path}", TimeSpan.FromSeconds(60));
        Assert.NotEqual(0, run.ExitCode);
        Assert.True(run.Elapsed < TimeSpan.FromSeconds(30), $"the job took {run.Elapsed.TotalSeconds:F1} s to end");
        Assert.Contains("rank 2: error: Stage 2 failed in the forward of micro-batch 0 (action 2F0)", run.Output);
        foreach (int rank in new[] { 0, 1, 3 })
        {
            string log = File.ReadAllText(Path.Combine(logs.Path, $"rank-{rank}.log"));
            Assert.Contains($"rank {rank}: error: rank 2 on ", log);
            Assert.Contains("(replica 0, rank 2: stage 2) failed: Stage 2 failed in the forward of micro-batch 0", log);
            Assert.DoesNotContain("step 3 ", log); // nobody finished the failed step
            var delay = Noticed(log) - Noticed(File.ReadAllText(Path.Combine(logs.Path, "rank-2.log")));
            Assert.True(delay < TimeSpan.FromSeconds(10), $"rank {rank} stopped {delay.TotalSeconds:F1} s after rank 2 failed:\n{log}");
        }
        Assert.Empty(MpiJob.Processes(logs.Path));
    }

    [MpiFact]
    public void A_killed_rank_brings_every_rank_down_within_seconds_and_the_job_names_it()
    {
        using var logs = new TempFolder();
        var output = new StringBuilder();
        using var job = MpiJob.Start(4, $"train --model mlp --stages 4 --steps 1000000 --log-dir {logs.Path}", output);
        try
        {
            string victimLog = Path.Combine(logs.Path, "rank-2.log");
            var started = Stopwatch.StartNew();
            while (!(File.Exists(victimLog) && File.ReadAllText(victimLog).Contains("step ")))
            {
                Assert.True(started.Elapsed < TimeSpan.FromSeconds(60), $"the job did not start training:\n{output}");
                Thread.Sleep(100);
            }
            int pid = int.Parse(Regex.Match(File.ReadAllText(victimLog), @"process (\d+)").Groups[1].Value);
            var clock = Stopwatch.StartNew();
            Process.GetProcessById(pid).Kill();
            Assert.True(job.WaitForExit(TimeSpan.FromSeconds(10)), $"mpirun was still running 10 s after rank 2 was killed:\n{output}");
            job.WaitForExit();
            string said = $"mpirun printed:\n{output}\nrank logs:\n" +
                          string.Join("\n", Directory.GetFiles(logs.Path).Order().Select(f => $"--- {Path.GetFileName(f)}\n{File.ReadAllText(f)}"));
            var left = MpiJob.Processes(logs.Path);
            Assert.True(left.Count == 0, $"processes still running: {string.Join(", ", left)}\n{said}"); // every rank is gone
            Assert.True(job.ExitCode != 0, said);
            Assert.True(output.ToString().Contains("BAD TERMINATION"), said);
            Assert.True(File.ReadAllText(victimLog).Contains("rank 2 of 4 on"), said); // the log names the rank of that process
        }
        finally
        {
            if (!job.HasExited) job.Kill(entireProcessTree: true);
        }
    }

    [MpiFact]
    public void A_failed_run_resumes_from_its_last_checkpoint_with_another_rank_layout_and_ends_as_an_uninterrupted_run()
    {
        using var folder = new TempFolder();
        string ck = Path.Combine(folder.Path, "ck");
        const string Gpt = "train --model gpt --task sorting --steps 30 --eval-batches 4";
        // 2 stages x 2 replicas; checkpoints at 15; rank 1 fails in step 22.
        var failed = MpiJob.Run(4, $"{Gpt} --stages 2 --data-parallel 2 --checkpoint {ck} --checkpoint-every 15 --inject-failure 1:22", Long);
        Assert.NotEqual(0, failed.ExitCode);
        Assert.Equal(["step-000015"], Directory.GetDirectories(ck).Select(Path.GetFileName).Order());
        // Resumed as 4 stages x 1 replica.
        var resumed = MpiJob.Run(4, $"{Gpt} --stages 4 --checkpoint {ck} --resume", Long);
        Assert.True(resumed.ExitCode == 0, resumed.Output);
        Assert.Contains("resumed from step 15", resumed.Output);
        // The same run without MPI or interruption, in one process.
        var straight = InProcess($"{Gpt} --stages 2");
        Assert.Equal(FinalLoss(straight), FinalLoss(resumed.Output));
    }

    [MpiFact]
    public void A_rank_failing_while_a_checkpoint_is_saved_leaves_the_previous_checkpoint_as_the_newest_and_loadable()
    {
        using var folder = new TempFolder();
        string ck = Path.Combine(folder.Path, "ck");
        var failed = MpiJob.Run(4, $"train --model gpt --task sorting --steps 30 --eval-batches 2 --stages 2 --data-parallel 2 --checkpoint {ck} --checkpoint-every 10 --inject-failure 0:20:checkpoint", Long);
        Assert.NotEqual(0, failed.ExitCode);
        Assert.Contains("while saving the checkpoint of step 20", failed.Output);
        Assert.Equal(["step-000010"], Directory.GetDirectories(ck).Select(Path.GetFileName).Order());
        var resumed = MpiJob.Run(2, $"train --model gpt --task sorting --steps 12 --eval-batches 2 --stages 2 --checkpoint {ck} --resume", Long);
        Assert.True(resumed.ExitCode == 0, resumed.Output);
        Assert.Contains("resumed from step 10", resumed.Output);
    }

    [MpiFact]
    public void A_rank_count_that_is_not_stages_times_replicas_is_refused_before_training()
    {
        var run = MpiJob.Run(3, "train --model mlp --stages 2 --data-parallel 2 --steps 5", TimeSpan.FromSeconds(60));
        Assert.NotEqual(0, run.ExitCode); // each rank exits with 2; mpirun reports whichever ended first (or was ended by it)
        Assert.Contains("the MPI job has 3 processes but the pipeline needs 2 ranks x 2 replicas = 4: start it with mpirun -np 4", run.Output);
        Assert.DoesNotContain("step 1", run.Output);
    }

    [MpiFact]
    public void Every_model_of_the_cli_trains_across_processes_with_the_losses_of_one_process()
    {
        foreach (var (model, args) in new[] { ("mlp", "--schedule zb-v --stages 2"), ("cnn", "--schedule interleaved --stages 2"), ("gpt", "--task sorting --stages 2 --eval-batches 2") })
        {
            string common = $"train --model {model} --steps 4 {args}";
            var mpi = MpiJob.Run(4, $"{common} --data-parallel 2", Long);
            Assert.True(mpi.ExitCode == 0, mpi.Output);
            var local = InProcess($"{common} --data-parallel 2");
            Assert.Equal(StepLosses(local), StepLosses(mpi.Output));
            // gpt's closing accuracy decodes greedily: forwards whose sequence grows by one token each time.
            Assert.Equal(Regex.Match(local, "^accuracy.*$", RegexOptions.Multiline).Value, Regex.Match(mpi.Output, "^accuracy.*$", RegexOptions.Multiline).Value);
            if (model == "gpt") AssertSameMemory(local, mpi.Output);
        }
    }

    // gpt's memory table, measured by the processes that hold the stages: the same parameters and peak micro-batch
    // counts as in one process, and activations of about the same size (each is a heap reading in its own process).
    private static void AssertSameMemory(string local, string mpi)
    {
        static List<(int Piece, string Parameters, double Activations, int Peak)> Pieces(string output) =>
            Regex.Matches(output, @"stage (\d+): parameters ([\d.]+) MB, activations ([\d.]+) MB \((\d+) micro-batch")
                .Select(m => (int.Parse(m.Groups[1].Value), m.Groups[2].Value, double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture), int.Parse(m.Groups[4].Value)))
                .ToList();
        var one = Pieces(local);
        var many = Pieces(mpi);
        Assert.Equal(2, one.Count);
        Assert.Equal(one.Select(p => (p.Piece, p.Parameters, p.Peak)), many.Select(p => (p.Piece, p.Parameters, p.Peak)));
        foreach (var (a, b) in one.Zip(many))
        {
            Assert.True(b.Activations > 0, mpi);
            Assert.InRange(b.Activations / a.Activations, 0.7, 1.3);
        }
    }

    [MpiFact]
    public void Large_activations_received_into_reused_memory_give_the_losses_of_one_process()
    {
        // Micro-batches of 32 x 128 tokens x width 512: 8 MB activations and gradients, received into ReceiveBuffers' pool.
        const string Gpt = "train --model gpt --task sorting --stages 2 --steps 6 --eval-batches 2 --width 512 --heads 8 --context 128 --batch-size 64 --microbatches 2";
        var mpi = MpiJob.Run(2, Gpt, Long);
        Assert.True(mpi.ExitCode == 0, mpi.Output);
        Assert.Equal(StepLosses(InProcess(Gpt)), StepLosses(mpi.Output));
    }

    [MpiFact]
    public void Keyed_dropout_gives_the_losses_of_one_process_and_of_one_stage()
    {
        // Dropout 0.1: the masks are keyed by (seed, step, layer, sample), not drawn in the order the ranks run.
        const string Gpt = "train --model gpt --task sorting --steps 10 --eval-batches 1 --dropout 0.1";
        var mpi = MpiJob.Run(2, $"{Gpt} --stages 2 --microbatches 4", Long);
        Assert.True(mpi.ExitCode == 0, mpi.Output);
        var losses = StepLosses(mpi.Output);
        Assert.Equal(10, losses.Count);
        Assert.Equal(StepLosses(InProcess($"{Gpt} --stages 2 --microbatches 4")), losses); // the same layout in one process: bitwise
        var oneStage = StepLosses(InProcess($"{Gpt} --stages 1 --microbatches 1"));
        for (int k = 0; k < losses.Count; k++)
            Assert.True(Math.Abs(Loss(losses[k]) - Loss(oneStage[k])) <= 2e-4, $"step {k + 1}: {losses[k]} (2 processes) vs {oneStage[k]} (1 stage)");
    }

    private static double Loss(string stepLoss) => double.Parse(stepLoss.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);

    [MpiFact]
    public void Each_rank_writes_its_own_timeline_and_rank_0_alone_the_loss_log()
    {
        using var folder = new TempFolder();
        string trace = Path.Combine(folder.Path, "t.json"), log = Path.Combine(folder.Path, "loss.csv");
        var run = MpiJob.Run(2, $"train --model gpt --task sorting --stages 2 --steps 3 --eval-batches 1 --trace {trace} --log {log}", Long);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("\"traceEvents\"", File.ReadAllText(trace));
        Assert.Contains("\"traceEvents\"", File.ReadAllText(Path.Combine(folder.Path, "t.rank-1.json")));
        Assert.Equal(4, File.ReadAllLines(log).Length); // a header and 3 steps, written once
        Assert.Equal(["loss.csv", "t.json", "t.rank-1.json"], Directory.GetFiles(folder.Path).Select(Path.GetFileName).Order());
    }

    private static List<string> GptLines(string output) =>
        output.Split('\n').Select(l => l.TrimEnd()).Where(l => l.StartsWith("gpt ")).ToList();

    // "training 0.4968 (step 30" and "validation 0.4500" of the summary.
    private static string FinalLoss(string output)
    {
        var line = Regex.Match(output, @"^loss\s+training (\S+) \(step (\d+).*validation (\S+)", RegexOptions.Multiline);
        Assert.True(line.Success, output);
        return $"step {line.Groups[2]}: training {line.Groups[1]}, validation {line.Groups[3]}";
    }

    private static List<string> StepLosses(string output) =>
        Regex.Matches(output, @"^step\s+(\d+)\s+loss\s+(\S+)", RegexOptions.Multiline).Select(m => $"{m.Groups[1]} {m.Groups[2]}").ToList();

    // When a rank's log says it saw the failure (its own, or another rank's notice).
    private static DateTime Noticed(string log) =>
        DateTime.Parse(Regex.Match(log, @"failure noticed (\S+)").Groups[1].Value, null, System.Globalization.DateTimeStyles.RoundtripKind);

    private static string InProcess(string arguments)
    {
        var info = new ProcessStartInfo("dotnet", $"{MpiJob.Cli} {arguments}") { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(info)!;
        string output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, output);
        return output;
    }
}

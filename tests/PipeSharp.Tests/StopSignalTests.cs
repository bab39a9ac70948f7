using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using PipeSharp.Checkpoints;
using PipeSharp.Tests.Mpi;

namespace PipeSharp.Tests;

/// <summary>
/// The command line in one process under SIGTERM (what container and cluster managers send): it stops after the step in
/// progress, saves a checkpoint of it and exits with 143; a second signal ends it at once. (SIGINT is what Ctrl+C sends;
/// a process started in the background may have it ignored, so the SIGINT tests go through mpirun: Mpi/MpiStopTests.)
/// </summary>
public class StopSignalTests
{
    private static readonly TimeSpan Start = TimeSpan.FromSeconds(90), Stop = TimeSpan.FromSeconds(30);

    [Fact]
    public void Sigterm_stops_after_the_step_it_reached_saves_that_step_exits_143_and_the_run_resumes_from_it()
    {
        using var folder = new TempFolder();
        string ck = Path.Combine(folder.Path, "ck");
        var output = new StringBuilder();
        var clock = Stopwatch.StartNew();
        using (var cli = MpiJob.StartCli($"train --model gpt --task sorting --steps 100000 --checkpoint {ck}", output))
        {
            try
            {
                MpiJob.WaitForOutput(cli, output, o => LastStep(o) >= 3, Start, "printed 3 steps");
                Signals.Send(cli.Id, Signals.Terminate);
                Assert.True(cli.WaitForExit(Stop), $"still running {Stop.TotalSeconds:F0} s after SIGTERM:\n{output}");
                cli.WaitForExit();
            }
            finally
            {
                if (!cli.HasExited) cli.Kill(entireProcessTree: true);
            }
            string text = output.ToString();
            Assert.True(cli.ExitCode == 143, $"exit code {cli.ExitCode}:\n{text}");
            int last = LastStep(text);
            Assert.Contains($"stopped after step {last} (SIGTERM)", text);
            Assert.Equal([last], CheckpointStore.Steps(ck)); // the step printed last, and no other
            using var loaded = CheckpointStore.Load(ck);     // complete: every file's length and checksum verified
            Assert.Equal(last, loaded.Manifest.Step);
            Assert.Equal(Enumerable.Range(0, loaded.Manifest.Balance.Sum()).Select(i => $"layer-{i}.safetensors"), loaded.Manifest.Files.Select(f => f.Name)); // one file per layer

            var resumed = new StringBuilder();
            using var again = MpiJob.StartCli($"train --model gpt --task sorting --steps {last + 2} --checkpoint {ck} --resume", resumed);
            Assert.True(again.WaitForExit(Start), $"the resumed run did not end:\n{resumed}");
            again.WaitForExit();
            Assert.True(again.ExitCode == 0, resumed.ToString());
            Assert.Contains($"resumed from step {last}", resumed.ToString());
            Assert.Equal([last + 1, last + 2], Steps(resumed.ToString()));
        }
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"took {clock.Elapsed.TotalSeconds:F0} s");
    }

    [Fact]
    public void A_second_sigterm_ends_the_process_at_once_with_143_without_finishing_the_stop()
    {
        using var folder = new TempFolder();
        var output = new StringBuilder();
        // Steps of tens to hundreds of milliseconds, then a checkpoint and the closing evaluation: a graceful stop takes
        // far longer than the few milliseconds between the first signal's note and the second signal.
        using var cli = MpiJob.StartCli($"train --model gpt --task sorting --width 256 --layers 4 --batch-size 64 --steps 100000 --checkpoint {Path.Combine(folder.Path, "ck")}", output);
        try
        {
            MpiJob.WaitForOutput(cli, output, o => LastStep(o) >= 2, Start, "printed 2 steps");
            Signals.Send(cli.Id, Signals.Terminate);
            // The second signal only once the first has been taken (two pending signals of a kind would merge into one).
            MpiJob.WaitForOutput(cli, output, o => o.Contains("SIGTERM: stopping after the current step"), Stop, "taken the first SIGTERM");
            var clock = Stopwatch.StartNew();
            Signals.Send(cli.Id, Signals.Terminate);
            Assert.True(cli.WaitForExit(Stop), $"still running {Stop.TotalSeconds:F0} s after the second SIGTERM:\n{output}");
            clock.Stop();
            cli.WaitForExit();
            string text = output.ToString();
            Assert.True(cli.ExitCode == 143, $"exit code {cli.ExitCode}:\n{text}");
            Assert.Contains("SIGTERM again: exiting at once (143).", text);
            Assert.DoesNotContain("interrupted after step", text); // no summary: it did not finish the graceful stop
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(3), $"ended {clock.Elapsed.TotalSeconds:F1} s after the second SIGTERM");
        }
        finally
        {
            if (!cli.HasExited) cli.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public void Sigterm_stops_the_mlp_training_loop_the_same_way()
    {
        var output = new StringBuilder();
        using var cli = MpiJob.StartCli("train --model mlp --steps 1000000", output);
        try
        {
            MpiJob.WaitForOutput(cli, output, o => LastStep(o) >= 3, Start, "printed 3 steps");
            Signals.Send(cli.Id, Signals.Terminate);
            Assert.True(cli.WaitForExit(Stop), $"still running {Stop.TotalSeconds:F0} s after SIGTERM:\n{output}");
            cli.WaitForExit();
            string text = output.ToString();
            Assert.True(cli.ExitCode == 143, $"exit code {cli.ExitCode}:\n{text}");
            Assert.Contains($"interrupted after {LastStep(text)} of 1000000 steps", text);
        }
        finally
        {
            if (!cli.HasExited) cli.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public void Sigterm_ends_verify_after_the_check_in_progress_with_143()
    {
        var output = new StringBuilder();
        using var cli = MpiJob.StartCli("verify", output);
        try
        {
            MpiJob.WaitForOutput(cli, output, o => Checks(o) >= 2, Start, "printed 2 checks");
            Signals.Send(cli.Id, Signals.Terminate);
            Assert.True(cli.WaitForExit(Stop), $"still running {Stop.TotalSeconds:F0} s after SIGTERM:\n{output}");
            cli.WaitForExit();
            string text = output.ToString();
            Assert.True(cli.ExitCode == 143, $"exit code {cli.ExitCode}:\n{text}");
            Assert.Contains($"stopped by SIGTERM after {Checks(text)} checks, 0 mismatches", text);
            Assert.DoesNotContain("checks, 0 mismatches (tolerance", text); // not the summary of a whole run
        }
        finally
        {
            if (!cli.HasExited) cli.Kill(entireProcessTree: true);
        }
    }

    // verify's result lines: "mlp    sgd       gpipe            1             1    0.00e+00  ok".
    private static int Checks(string output) => Regex.Matches(output, @"^(mlp|cnn|gpt)\s+\S+\s+\S+\s+\d+\s+\d+\s+\S+\s+(ok|FAIL)", RegexOptions.Multiline).Count;

    /// <summary>The step numbers of the step lines, in order.</summary>
    internal static List<int> Steps(string output) =>
        Regex.Matches(output, @"^step\s+(\d+)\s", RegexOptions.Multiline).Select(m => int.Parse(m.Groups[1].Value)).ToList();

    /// <summary>The last step line's number (0 before any).</summary>
    internal static int LastStep(string output) => Steps(output).LastOrDefault();
}

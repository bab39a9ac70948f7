using System.Text.RegularExpressions;

namespace PipeSharp.Tests.Cli;

/// <summary>A non-finite loss or gradient norm stops training naming the step, or with <c>--on-nonfinite skip</c> skips the step.</summary>
public class NonFiniteCliTests
{
    private static readonly string[] ShortGpt = ["train", "--model", "gpt", "--task", "sorting", "--steps", "3", "--eval-batches", "1"];

    [Fact]
    public void A_non_finite_loss_stops_training_naming_the_step_and_saves_the_steps_before_it()
    {
        using var folder = new TempFolder();
        var run = CliProcess.Run([.. ShortGpt, "--inject-failure", "0:2:nan", "--checkpoint", folder["ck"]]);
        Assert.True(run.ExitCode == 1, run.Output);
        // The step before it is saved: nothing trained is lost.
        Assert.Equal(["step-000001"], Directory.GetDirectories(folder["ck"]).Select(Path.GetFileName));
        Assert.Contains("step 2", run.Stderr);
        Assert.Contains("--on-nonfinite skip", run.Stderr);
        Assert.Matches(new Regex(@"^step\s+1\s+loss", RegexOptions.Multiline), run.Stdout);
        Assert.DoesNotMatch(new Regex(@"^step\s+2\s+loss", RegexOptions.Multiline), run.Stdout);
    }

    [Fact]
    public void With_on_nonfinite_skip_the_step_is_skipped_and_training_goes_on()
    {
        var run = CliProcess.Run([.. ShortGpt, "--inject-failure", "0:2:nan", "--on-nonfinite", "skip"]);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Matches(new Regex(@"^step\s+2\s+loss\s+NaN.*skipped", RegexOptions.Multiline), run.Stdout);
        var last = Regex.Match(run.Stdout, @"^step\s+3\s+loss\s+(\S+)", RegexOptions.Multiline);
        Assert.True(last.Success && double.IsFinite(double.Parse(last.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)), run.Stdout);
    }
}

/// <summary>Under mpirun every rank takes the same decision: the loss and the gradient norm are global.</summary>
[Collection(Mpi.MpiCollection.Name)]
public class NonFiniteMpiCliTests
{
    [Mpi.MpiFact]
    public void Under_mpirun_every_rank_stops_at_the_same_step_or_skips_it_with_the_losses_of_one_process()
    {
        // Rank 1 holds the last stage: its NaN reaches rank 0 only through the backward and the global norm.
        const string Gpt = "train --model gpt --task sorting --stages 2 --steps 3 --eval-batches 1 --inject-failure 1:2:nan";
        var stopped = Mpi.MpiJob.Run(2, Gpt, TimeSpan.FromMinutes(2));
        Assert.True(stopped.ExitCode != 0, stopped.Output);
        Assert.Contains("rank 0: error: step 2: the loss is NaN", stopped.Output);
        Assert.Contains("rank 1: error: step 2: the loss is NaN", stopped.Output);

        var skipped = Mpi.MpiJob.Run(2, Gpt + " --on-nonfinite skip", TimeSpan.FromMinutes(2));
        Assert.True(skipped.ExitCode == 0, skipped.Output);
        Assert.Matches(new Regex(@"^step\s+2\s+loss\s+NaN.*skipped", RegexOptions.Multiline), skipped.Output);
        var local = CliProcess.Run((Gpt + " --on-nonfinite skip").Split(' '));
        Assert.True(local.ExitCode == 0, local.Output);
        Assert.Equal(StepLosses(local.Stdout), StepLosses(skipped.Output));
    }

    private static List<string> StepLosses(string output) =>
        Regex.Matches(output, @"^step\s+(\d+)\s+loss\s+(\S+)", RegexOptions.Multiline).Select(m => $"{m.Groups[1]} {m.Groups[2]}").ToList();
}

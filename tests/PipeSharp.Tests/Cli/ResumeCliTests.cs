namespace PipeSharp.Tests.Cli;

/// <summary><c>--resume</c> with nothing to resume from is refused; <c>--resume-or-start</c> starts fresh then.</summary>
public class ResumeCliTests
{
    private static readonly string[] ShortGpt = ["train", "--model", "gpt", "--task", "sorting", "--steps", "2", "--eval-batches", "1"];

    [Fact]
    public void Resume_from_a_folder_without_a_checkpoint_is_refused_unless_resume_or_start()
    {
        using var folder = new TempFolder();
        string ck = folder["ck"];
        Directory.CreateDirectory(Path.Combine(ck, "step-000005")); // a step folder without its manifest: not a checkpoint
        var refused = CliProcess.Run([.. ShortGpt, "--checkpoint", ck, "--resume"]);
        Assert.True(refused.ExitCode == 2, refused.Output);
        Assert.Contains("--resume", refused.Stderr);
        Assert.Contains("no checkpoint", refused.Stderr);
        Assert.Contains("--resume-or-start", refused.Stderr);
        Assert.Equal("", refused.Stdout);

        var started = CliProcess.Run([.. ShortGpt, "--checkpoint", ck, "--resume-or-start"]);
        Assert.True(started.ExitCode == 0, started.Output);
        Assert.Contains("starting from step 0", started.Output);
        Assert.True(File.Exists(Path.Combine(ck, "step-000002", "manifest.json")), started.Output);

        // Now there is one: --resume-or-start continues from it.
        var resumed = CliProcess.Run(["train", "--model", "gpt", "--task", "sorting", "--steps", "3", "--eval-batches", "1", "--checkpoint", ck, "--resume-or-start"]);
        Assert.True(resumed.ExitCode == 0, resumed.Output);
        Assert.Contains("resumed from step 2", resumed.Output);
    }

    [Fact]
    public void Resume_from_a_folder_that_does_not_exist_is_refused()
    {
        using var folder = new TempFolder();
        var run = CliProcess.Run([.. ShortGpt, "--checkpoint", folder["missing"], "--resume"]);
        Assert.True(run.ExitCode == 2, run.Output);
        Assert.Contains("--resume-or-start", run.Stderr);
    }
}

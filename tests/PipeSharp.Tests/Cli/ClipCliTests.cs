namespace PipeSharp.Tests.Cli;

/// <summary><c>--clip</c> takes the library's MaxGradNorm rule under its own name: a finite number, 0 for none.</summary>
public class ClipCliTests
{
    [Theory]
    [InlineData("nan")]
    [InlineData("Infinity")]
    public void A_clip_that_is_not_a_finite_number_is_refused_naming_clip(string value)
    {
        var run = CliProcess.Run("train", "--model", "gpt", "--task", "sorting", "--steps", "2", "--clip", value);
        Assert.True(run.ExitCode == 2, run.Output);
        Assert.Contains($"--clip must be zero or a positive number, got {value}", run.Stderr);
        Assert.Equal("", run.Stdout);
    }
}

namespace PipeSharp.Tests.Cli;

/// <summary><c>train --recompute none|full|LIST</c> sets the library's recomputation; a bad value is refused before any work.</summary>
public class RecomputeCliTests
{
    [Theory]
    [InlineData("some")]
    [InlineData("1,x")]
    [InlineData("-1")]
    public void A_recompute_value_that_is_neither_none_full_nor_layer_indices_is_refused_naming_the_option(string value)
    {
        var run = CliProcess.Run("train", "--model", "gpt", "--task", "sorting", "--steps", "2", "--recompute", value);
        Assert.True(run.ExitCode == 2, run.Output);
        Assert.Contains("--recompute:", run.Stderr);
        Assert.Equal("", run.Stdout);
    }

    [Fact]
    public void A_layer_beyond_the_model_is_refused_with_the_layer_count()
    {
        // The default gpt of the sorting task: 4 blocks, so 6 layers (0 to 5).
        var run = CliProcess.Run("train", "--model", "gpt", "--task", "sorting", "--steps", "2", "--recompute", "1,9");
        Assert.True(run.ExitCode != 0, run.Output);
        Assert.Contains("Recomputation.Layers names layer 9", run.Output);
    }

    [Fact]
    public void A_run_with_full_recomputation_trains_and_says_so()
    {
        var run = CliProcess.Run("train", "--model", "gpt", "--task", "sorting", "--steps", "2", "--recompute", "full");
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("recomputation full", run.Output);
    }
}

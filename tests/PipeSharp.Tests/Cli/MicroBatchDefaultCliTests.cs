namespace PipeSharp.Tests.Cli;

/// <summary>
/// <c>--microbatches</c> defaults to 4, except with <c>--ranks 1</c>: one stage has no pipeline to fill, so its batch is
/// not split (splitting it only made its matrix products smaller: issue 11).
/// </summary>
public class MicroBatchDefaultCliTests
{
    [Theory]
    [InlineData("1", "1 micro-batch of 16 sequences")]
    [InlineData("2", "4 micro-batches of 4 sequences")]
    public void One_stage_trains_on_the_whole_batch_unless_told_otherwise(string stages, string expected)
    {
        var run = CliProcess.Run("train", "--model", "gpt", "--task", "sorting", "--steps", "1", "--ranks", stages);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains(expected, run.Stdout);
    }

    [Fact]
    public void Microbatches_given_with_one_stage_are_kept()
    {
        var run = CliProcess.Run("train", "--model", "gpt", "--task", "sorting", "--steps", "1", "--ranks", "1", "--microbatches", "4");
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("4 micro-batches of 4 sequences", run.Stdout);
    }

    [Fact]
    public void Replicas_are_shown_with_their_share_of_the_batch()
    {
        var run = CliProcess.Run("train", "--model", "gpt", "--task", "sorting", "--steps", "1", "--ranks", "1", "--replicas", "2");
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("2 replicas x 1 micro-batch of 8 sequences", run.Stdout);
    }
}

namespace PipeSharp.Tests.Cli;

/// <summary><c>export</c> to a path it cannot write names that path and <c>--output</c>.</summary>
public class ExportCliTests(SortingCheckpoint checkpoint) : IClassFixture<SortingCheckpoint>
{
    [Fact]
    public void Export_to_an_unwritable_path_names_that_path_and_the_option()
    {
        var run = CliProcess.Run("export", "--checkpoint", checkpoint.Directory, "--output", "/proc/pipesharp-model.safetensors");
        Assert.True(run.ExitCode == 2, run.Output);
        Assert.Contains("--output", run.Stderr);
        Assert.Contains("'/proc/pipesharp-model.safetensors'", run.Stderr);
        Assert.DoesNotContain(".tmp-", run.Output);
    }
}

using System.Text.RegularExpressions;

namespace PipeSharp.Tests.Cli;

/// <summary>Every file <c>train</c> writes is checked before the model is built, naming its option; the check leaves nothing behind.</summary>
public class OutputFileCliTests
{
    private static readonly string[] ShortGpt = ["train", "--model", "gpt", "--task", "sorting", "--steps", "2", "--eval-batches", "1"];

    [Theory]
    [InlineData("mlp", "--svg", "/proc/pipesharp-test.svg")]
    [InlineData("mlp", "--trace", "/proc/pipesharp-test.json")]
    [InlineData("gpt", "--svg", "/proc/pipesharp-test.svg")]
    [InlineData("gpt", "--trace", "/proc/pipesharp-test.json")]
    [InlineData("gpt", "--log", "/proc/pipesharp-test.csv")]
    [InlineData("gpt", "--loss-curve", "/proc/pipesharp-test.svg")]
    public void An_unwritable_output_file_is_refused_before_the_model_is_built(string model, string option, string path)
    {
        string[] common = model == "gpt" ? ShortGpt : ["train", "--model", model, "--steps", "2"];
        var run = CliProcess.Run([.. common, option, path]);
        Assert.True(run.ExitCode == 2, $"exit {run.ExitCode}: {run.Output}");
        Assert.Contains($"{option}: cannot write '{path}'", run.Stderr);
        Assert.Equal("", run.Stdout); // nothing was built or trained
    }

    [Fact]
    public void An_output_file_under_a_regular_file_is_refused_naming_the_option()
    {
        using var folder = new TempFolder();
        File.WriteAllText(folder["file.txt"], "x");
        var run = CliProcess.Run([.. ShortGpt, "--svg", Path.Combine(folder["file.txt"], "out.svg")]);
        Assert.True(run.ExitCode == 2, run.Output);
        Assert.Contains("--svg", run.Stderr);
        Assert.Contains("file.txt", run.Stderr);
    }

    [Fact]
    public void Checking_the_output_files_leaves_no_file_behind_and_keeps_existing_ones()
    {
        using var folder = new TempFolder();
        File.WriteAllText(folder["old.svg"], "keep me");
        var run = CliProcess.Run([.. ShortGpt, "--log", folder["new.csv"], "--svg", folder["old.svg"], "--trace", "/proc/pipesharp-test.json"]);
        Assert.True(run.ExitCode == 2, run.Output);
        Assert.Contains("--trace", run.Stderr);
        Assert.False(File.Exists(folder["new.csv"]), "the check left the --log file behind");
        Assert.Equal("keep me", File.ReadAllText(folder["old.svg"]));
    }
}

/// <summary>The same checks under mpirun, where each rank writes files of its own.</summary>
[Collection(Mpi.MpiCollection.Name)]
public class OutputFileMpiCliTests
{
    [Mpi.MpiFact]
    public void A_rank_whose_own_timeline_file_cannot_be_written_stops_every_rank_before_training()
    {
        using var folder = new TempFolder();
        Directory.CreateDirectory(folder["t.rank-1.json"]); // rank 1's trace: a folder, so it cannot be written
        var run = Mpi.MpiJob.Run(2, $"train --model gpt --task sorting --stages 2 --steps 2 --eval-batches 1 --trace {folder["t.json"]}", TimeSpan.FromMinutes(2));
        Assert.True(run.ExitCode != 0, run.Output);
        Assert.Contains($"rank 1: error: --trace: cannot write '{folder["t.rank-1.json"]}'", run.Output);
        Assert.DoesNotMatch(new Regex(@"^step\s+1\s+loss", RegexOptions.Multiline), run.Output);
        Assert.False(File.Exists(folder["t.json"]), "rank 0's check left its file behind");
    }
}

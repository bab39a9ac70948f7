using System.Text.RegularExpressions;

namespace PipeSharp.Tests.Cli;

/// <summary>
/// The options renamed with the vocabulary (stage: a model piece, rank: a worker, replica: a copy of the pipeline):
/// the new names work, and the old ones still do for one release, each printing one note on stderr.
/// </summary>
public class RenamedOptionCliTests
{
    private static readonly string[] Mlp = ["train", "--model", "mlp", "--steps", "1", "--batch-size", "8", "--microbatches", "2"];

    [Fact]
    public void The_new_names_train_without_a_note()
    {
        var run = CliProcess.Run([.. Mlp, "--ranks", "2", "--replicas", "2", "--threads-per-rank", "1"]);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Matches(new Regex(@"^step\s+1\s+loss", RegexOptions.Multiline), run.Stdout);
        Assert.DoesNotContain("note:", run.Stderr);
    }

    [Fact]
    public void The_old_names_still_train_and_each_prints_one_note_naming_the_new_one()
    {
        var run = CliProcess.Run([.. Mlp, "--stages", "2", "--data-parallel", "2", "--threads-per-stage", "1"]);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Matches(new Regex(@"^step\s+1\s+loss", RegexOptions.Multiline), run.Stdout);
        var notes = run.Stderr.Split('\n').Where(l => l.StartsWith("note:")).ToList();
        Assert.Equal(
            [
                "note: --data-parallel is now --replicas; --data-parallel will be removed in the next release.",
                "note: --stages is now --ranks; --stages will be removed in the next release.",
                "note: --threads-per-stage is now --threads-per-rank; --threads-per-stage will be removed in the next release.",
            ],
            notes.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Old_and_new_names_give_the_same_run()
    {
        string[] common = ["train", "--model", "mlp", "--steps", "1", "--batch-size", "8", "--microbatches", "4",
            "--schedule", "interleaved", "--seed", "3", "--threads-per-rank", "1"];
        var renamed = CliProcess.Run([.. common, "--ranks", "2", "--stages-per-rank", "2"]);
        var old = CliProcess.Run([.. common, "--stages", "2", "--chunks", "2"]);
        Assert.True(renamed.ExitCode == 0, renamed.Output);
        Assert.True(old.ExitCode == 0, old.Output);
        Assert.Contains("note: --chunks is now --stages-per-rank; --chunks will be removed in the next release.", old.Stderr);
        Assert.Equal(Loss(renamed.Stdout), Loss(old.Stdout));
        Assert.Contains("(2 stages per rank)", renamed.Stdout);
    }

    [Fact]
    public void Simulate_takes_the_old_stages_flag_as_ranks()
    {
        var run = CliProcess.Run("simulate", "--schedule", "1f1b", "--stages", "3", "--microbatches", "6");
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("ranks          3", run.Stdout);
        Assert.Contains("note: --stages is now --ranks", run.Stderr);
    }

    [Fact]
    public void Help_names_the_new_flags_and_their_old_names()
    {
        var run = CliProcess.Run("train", "--help");
        Assert.True(run.ExitCode == 0, run.Output);
        foreach (var flag in new[] { "--ranks", "--stages-per-rank", "--replicas", "--threads-per-rank" }) Assert.Contains(flag, run.Stdout);
        Assert.Contains("--stages is its old name", run.Stdout);
    }

    private static string Loss(string stdout) => Regex.Match(stdout, @"^step\s+1\s+loss\s+(\S+)", RegexOptions.Multiline).Groups[1].Value;
}

using System.Text.RegularExpressions;

namespace PipeSharp.Tests.Cli;

/// <summary>
/// The README's main job, at a small number of steps: the character GPT on the tiny Shakespeare that comes with the
/// repository, 2 ranks, a validation loss and a sample at the end, a checkpoint that <c>generate</c> continues.
/// </summary>
public sealed class MainJobTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(4);
    private readonly TempFolder _temp = new();

    private string Folder => _temp.Path;

    [Fact]
    public void Train_on_the_bundled_corpus_prints_a_sample_and_leaves_a_checkpoint_that_generate_continues()
    {
        string checkpoint = Path.Combine(Folder, "shakespeare");
        // Started from an empty folder: the corpus is found beside the program, not relative to the working directory.
        var train = CliProcess.Run(Args($"train --model gpt --ranks 2 --steps 12 --eval-batches 2 --sample 320 --checkpoint {checkpoint}"), Timeout, Folder);
        Assert.True(train.ExitCode == 0, train.Output);
        Assert.Matches(@"(?m)^task +tinyshakespeare\.txt \(char tokens, vocabulary 65", train.Output);
        Assert.Matches(@"(?m)^schedule +1f1b, 2 ranks", train.Output);
        Assert.Matches(@"(?m)^loss .*validation \d+\.\d+", train.Output);

        // The sample: a line that starts with "sample", then the generated text (320 characters, line breaks included).
        var lines = train.Stdout.Replace("\r", "").Split('\n');
        int header = Array.FindIndex(lines, l => l.StartsWith("sample"));
        Assert.True(header >= 0, train.Output);
        string sample = string.Join("\n", lines[(header + 1)..]).TrimEnd('\n');
        Assert.True(sample.Length >= 300, $"the sample has {sample.Length} characters:\n{sample}");
        Assert.Contains($"generate --checkpoint {checkpoint}", lines[header]);
        Assert.True(Directory.Exists(Path.Combine(checkpoint, "step-000012")), train.Output);

        var generate = CliProcess.Run(Args($"generate --checkpoint {checkpoint} --prompt ROMEO: --tokens 40 --ranks 2"), Timeout, Folder);
        Assert.True(generate.ExitCode == 0, generate.Output);
        Assert.StartsWith("ROMEO:", generate.Stdout);
        Assert.True(generate.Stdout.TrimEnd().Length >= "ROMEO:".Length + 40, generate.Output);
    }

    [Fact]
    public void The_sorting_task_stays_behind_an_option_and_takes_no_data_file()
    {
        var sorting = CliProcess.Run(Args($"train --model gpt --task sorting --steps 3 --eval-batches 1"), Timeout, Folder);
        Assert.True(sorting.ExitCode == 0, sorting.Output);
        Assert.Matches(@"(?m)^accuracy ", sorting.Output);
        Assert.DoesNotMatch(@"(?m)^sample", sorting.Output);

        var both = CliProcess.Run(Args($"train --model gpt --task sorting --data x.txt --steps 3"), Timeout, Folder);
        Assert.NotEqual(0, both.ExitCode);
        Assert.Contains("--data is for --task text", both.Stderr);
    }

    private static string[] Args(string line) => line.Split(' ', StringSplitOptions.RemoveEmptyEntries);

    public void Dispose() => _temp.Dispose();
}

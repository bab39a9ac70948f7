namespace PipeSharp.Tests.Cli;

/// <summary><c>pipesharp plan</c> prints the best layouts; <c>train --plan auto</c> runs the best; bad input is refused before any work.</summary>
public class PlanCliTests
{
    // `pipesharp plan --model mlp` with the batch, the processors and a cache folder of the test's own.
    private static CliProcess.Result PlanMlp(TempFolder cache, int batch, int processors, params string[] more) =>
        CliProcess.Run(["plan", "--model", "mlp", "--batch-size", batch.ToString(), "--processors", processors.ToString(), "--profile-cache", cache.Path, .. more]);

    [Fact]
    public void Plan_prints_a_table_of_the_best_layouts_and_a_second_plan_reads_the_cache()
    {
        using var cache = new TempFolder();
        var run = PlanMlp(cache, batch: 16, processors: 2, "--top", "3");
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("profiling 8 layers", run.Stdout);
        var lines = run.Stdout.Split('\n');
        int header = Array.FindIndex(lines, l => l.Contains("schedule") && l.Contains("predicted samples/s") && l.Contains("peak/rank") && l.Contains("bubble"));
        Assert.True(header >= 0, run.Stdout);
        Assert.All(lines.Skip(header + 1).Take(3), l => Assert.Matches(@"^\s*[123]\s+[12]\s+[12]\s+\d+\s+(gpipe|1f1b|interleaved|zb-h1|zb-v)\s+(none|full)\s+[12]\s+[\d,]+\s+\d+", l));
        Assert.NotEmpty(Directory.GetFiles(cache.Path, "*.json"));

        var again = PlanMlp(cache, batch: 16, processors: 2, "--top", "3");
        Assert.True(again.ExitCode == 0, again.Output);
        Assert.DoesNotContain("profiling", again.Stdout);
    }

    [Fact]
    public void A_corrupt_cache_file_is_refused_naming_it_before_anything_is_profiled()
    {
        using var cache = new TempFolder();
        Assert.Equal(0, PlanMlp(cache, batch: 8, processors: 1).ExitCode);
        var files = Directory.GetFiles(cache.Path, "*.json");
        foreach (var f in files) File.WriteAllText(f, "not json");
        var run = PlanMlp(cache, batch: 8, processors: 1);
        Assert.True(run.ExitCode == 2, run.Output);
        Assert.Contains(cache.Path, run.Stderr);
        Assert.Contains("--reprofile", run.Stderr);
        Assert.DoesNotContain("profiling", run.Stdout);

        var fixedRun = PlanMlp(cache, batch: 8, processors: 1, "--reprofile");
        Assert.True(fixedRun.ExitCode == 0, fixedRun.Output);
    }

    [Fact]
    public void A_budget_no_layout_fits_names_the_option_and_the_smallest_budget_that_would()
    {
        using var cache = new TempFolder();
        var run = PlanMlp(cache, batch: 8, processors: 2, "--memory-per-device", "1KB");
        Assert.True(run.ExitCode == 2, run.Output);
        Assert.Contains("no layout fits MemoryPerDevice (--memory-per-device) 1.0 KB", run.Stderr);
        Assert.Matches(@"the smallest any of the \d+ layouts tried needs is [\d.]+ [KM]B per rank", run.Stderr);
    }

    [Theory]
    [InlineData("--devices", "tpu", "device 'tpu'")]
    [InlineData("--memory-per-device", "lots", "--memory-per-device")]
    [InlineData("--ranks", "9", "Ranks (--ranks) is 9")]
    public void Bad_plan_options_are_refused_before_any_profiling(string option, string value, string expected)
    {
        using var cache = new TempFolder();
        var run = CliProcess.Run("plan", "--model", "mlp", "--processors", "2", "--profile-cache", cache.Path, option, value);
        Assert.True(run.ExitCode == 2, run.Output);
        Assert.Contains(expected, run.Stderr);
        Assert.DoesNotContain("profiling", run.Stdout);
        Assert.Empty(Directory.GetFiles(cache.Path));
    }

    [Fact]
    public void Train_plan_auto_prints_the_chosen_plan_and_trains_with_it()
    {
        using var cache = new TempFolder();
        var run = CliProcess.Run("train", "--model", "mlp", "--plan", "auto", "--steps", "3", "--batch-size", "16", "--processors", "2", "--profile-cache", cache.Path);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Matches(@"plan: \d rank\(s\) x \d replica\(s\), --microbatches \d+, --schedule \S+, --recompute (none|full), --threads-per-rank \d, --balance [\d,]+: predicted", run.Stdout);
        Assert.Contains("done: 3 steps", run.Stdout);
    }

    [Fact]
    public void Train_plan_auto_keeps_given_settings_fixed_and_refuses_a_balance()
    {
        using var cache = new TempFolder();
        var run = CliProcess.Run("train", "--model", "gpt", "--task", "sorting", "--plan", "auto", "--steps", "2", "--ranks", "2", "--schedule", "1f1b",
            "--processors", "2", "--profile-cache", cache.Path);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("plan: 2 rank(s) x 1 replica(s)", run.Stdout);
        Assert.Contains("--schedule 1f1b", run.Stdout);
        Assert.Contains("tokens/s", run.Stdout);

        var balance = CliProcess.Run("train", "--model", "mlp", "--plan", "auto", "--balance", "4,4", "--profile-cache", cache.Path);
        Assert.True(balance.ExitCode == 2, balance.Output);
        Assert.Contains("--balance cannot be combined with --plan auto", balance.Stderr);
    }
}

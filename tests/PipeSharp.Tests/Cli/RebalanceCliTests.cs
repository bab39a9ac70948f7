namespace PipeSharp.Tests.Cli;

/// <summary>
/// <c>train --rebalance [--rebalance-threshold SHARE] [--rebalance-steps N]</c> turns on automatic rebalancing; bad
/// values are refused before any work, and a run with it trains.
/// </summary>
public class RebalanceCliTests
{
    [Theory]
    [InlineData("--rebalance-steps", "0")]
    [InlineData("--rebalance-threshold", "-0.5")]
    public void A_bad_rebalancing_value_is_refused_naming_the_option(string option, string value)
    {
        var run = CliProcess.Run("train", "--model", "mlp", "--steps", "2", "--rebalance", option, value);
        Assert.True(run.ExitCode == 2, run.Output);
        Assert.Contains($"{option} must be", run.Stderr);
        Assert.Equal("", run.Stdout);
    }

    [Fact]
    public void A_run_with_rebalancing_trains_and_prints_any_move_it_makes()
    {
        var run = CliProcess.Run("train", "--model", "gpt", "--task", "sorting", "--steps", "6", "--eval-every", "0",
            "--rebalance", "--rebalance-threshold", "0", "--rebalance-steps", "1");
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("done: 6 steps", run.Output);
        // Whether the measured speeds are worth a move depends on the machine; a move, if any, is printed as a value.
        foreach (var line in run.Stdout.Split('\n').Where(l => l.StartsWith("rebalanced")))
            Assert.Matches(@"^rebalanced after step \d+: layers? [\d,]+ rank \d -> rank \d \(predicted gain \d+ ?%\)$", line.TrimEnd());
    }
}

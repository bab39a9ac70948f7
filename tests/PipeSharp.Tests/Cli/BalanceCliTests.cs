using System.Text.RegularExpressions;

namespace PipeSharp.Tests.Cli;

/// <summary><c>train --balance auto|params|uniform|time|N,N,...</c> and <c>--device-speeds</c>: the splits and the refusals.</summary>
public class BalanceCliTests
{
    private static readonly string[] Mlp = ["train", "--model", "mlp", "--steps", "1", "--threads-per-rank", "1"];

    private static int[] StageLayers(string stdout) =>
        Regex.Matches(stdout, @"^stage \d+\s+layers (\d+)(?:-(\d+))?", RegexOptions.Multiline)
            .Select(m => m.Groups[2].Success ? int.Parse(m.Groups[2].Value) - int.Parse(m.Groups[1].Value) + 1 : 1).ToArray();

    [Fact]
    public void Each_mode_splits_and_trains()
    {
        var uniform = CliProcess.Run([.. Mlp, "--ranks", "3", "--balance", "uniform"]);
        Assert.True(uniform.ExitCode == 0, uniform.Output);
        Assert.Equal([2, 3, 3], StageLayers(uniform.Stdout));
        var counts = CliProcess.Run([.. Mlp, "--balance", "3,5"]);
        Assert.True(counts.ExitCode == 0, counts.Output);
        Assert.Equal([3, 5], StageLayers(counts.Stdout));
        // A rank half as fast gets fewer layers than the split by parameter count (4,4) gives it.
        var slow = CliProcess.Run([.. Mlp, "--device-speeds", "1,0.5"]);
        Assert.True(slow.ExitCode == 0, slow.Output);
        var layers = StageLayers(slow.Stdout);
        Assert.True(layers[1] < 4, slow.Stdout);
        Assert.Matches(new Regex(@"^step\s+1\s+loss", RegexOptions.Multiline), slow.Stdout);
    }

    [Theory]
    [InlineData("--balance fast", "--balance: 'fast' is neither a balance mode nor layer counts: use auto, params, uniform or time")]
    [InlineData("--device-speeds 1,-2", "--device-speeds: '-2' (entry 2 of '1,-2') is not a positive number")]
    [InlineData("--device-speeds 1,1,1", "DeviceSpeeds has 3 entries for 2 ranks: give one speed factor per rank")]
    [InlineData("--balance params --device-speeds 1,0.5", "--device-speeds is used by --balance auto")]
    [InlineData("--memory-per-device 100KB", "does not fit its memory budget")]
    public void Bad_balance_input_is_refused_before_training(string arguments, string message)
    {
        var run = CliProcess.Run([.. Mlp, .. arguments.Split(' ')]);
        Assert.NotEqual(0, run.ExitCode);
        Assert.Contains(message, run.Stderr);
        Assert.DoesNotContain("step 1", run.Stdout);
    }
}

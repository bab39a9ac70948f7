using PipeSharp.Models;
using PipeSharp.Partitioning;
using PipeSharp.Runtime;
using PipeSharp.Verification;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Partitioning;

/// <summary>
/// <see cref="PipelineOptions.BalanceMode"/>: each mode's split, the auto split with device speeds training the
/// parameters of one device, and bad options refused before anything is built.
/// </summary>
public class BalanceModeTests
{
    private static TorchSharp.Modules.Sequential Mlp10()
    {
        manual_seed(1);
        return Mlp.Create(16, 32, 6, linearLayers: 10);
    }

    [Theory]
    [InlineData("1f1b", 3, new[] { 1.0, 0.4, 1.0 })]
    [InlineData("zb-v", 2, new[] { 0.4, 1.0 })]
    public void The_auto_split_for_uneven_devices_trains_the_parameters_of_one_device(string schedule, int ranks, double[] speeds)
    {
        var batches = EquivalenceTests.Batches([16], 6, batchSize: 16);
        var options = new PipelineOptions
        {
            Ranks = ranks, MicroBatches = 4, Schedule = schedule, ThreadsPerRank = 1,
            BalanceMode = BalanceMode.Auto, DeviceSpeeds = speeds, ProfileInput = batches[0].Item1,
        };
        // The slow rank gets fewer layers than the split by parameter count gives it.
        using (var model = Mlp10())
        using (var auto = new Pipeline(model, options, EquivalenceTests.CrossEntropy, TestModels.Sgd))
        using (var byParameters = new Pipeline(Mlp10(), options with { BalanceMode = BalanceMode.Parameters, DeviceSpeeds = null }, EquivalenceTests.CrossEntropy, TestModels.Sgd))
        {
            int slow = Array.IndexOf(speeds, speeds.Min());
            int Layers(Pipeline p, int rank) => Enumerable.Range(0, p.Balance.Count).Where(s => p.Schedule.StageToRank[s] == rank).Sum(s => p.Balance[s]);
            Assert.True(Layers(auto, slow) < Layers(byParameters, slow), $"auto {string.Join(",", auto.Balance)} vs by parameters {string.Join(",", byParameters.Balance)}");
        }
        double diff = EquivalenceCheck.MaxParameterDifference(Mlp10, options, EquivalenceTests.Optimizer("adam"), EquivalenceTests.CrossEntropy, batches);
        Assert.True(diff <= 1e-5, $"max parameter difference {diff:E2} > 1e-5");
    }

    [Fact]
    public void Uniform_gives_equal_counts_and_parameters_stays_the_default()
    {
        using var uniform = new Pipeline(Mlp10(), new PipelineOptions { Ranks = 3, BalanceMode = BalanceMode.Uniform }, TestModels.Mse, TestModels.Sgd);
        Assert.Equal([3, 3, 4], uniform.Balance);
        var layers = new List<nn.Module<Tensor, Tensor>> { nn.Linear(100, 100), nn.Linear(10, 10), nn.Linear(10, 10), nn.Linear(10, 10) };
        using var byDefault = new Pipeline(layers, new PipelineOptions { Ranks = 2 }, TestModels.Mse, TestModels.Sgd);
        Assert.Equal([1, 3], byDefault.Balance);
    }

    [Fact]
    public void Time_gives_a_slow_layer_without_parameters_a_stage_of_its_own()
    {
        manual_seed(0);
        var layers = new List<nn.Module<Tensor, Tensor>> { new SlowLayer(30) };
        for (int i = 0; i < 4; i++) layers.Add(nn.Linear(64, 64));
        using var input = randn(16, 64);
        using var pipe = new Pipeline(layers, new PipelineOptions { Ranks = 2, BalanceMode = BalanceMode.Time, ProfileInput = input }, TestModels.Mse, TestModels.Sgd);
        Assert.Equal([1, 4], pipe.Balance);
    }

    [Fact]
    public void Measuring_leaves_the_running_statistics_and_the_generator_as_they_were()
    {
        manual_seed(4);
        var model = nn.Sequential(("0", nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))), ("1", nn.Linear(8, 8)), ("2", nn.Linear(8, 2)));
        var before = model.buffers().Select(b => b.clone()).ToList();
        using var input = randn(16, 8);
        manual_seed(9);
        float expected = rand(1).item<float>();
        manual_seed(9);
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, BalanceMode = BalanceMode.Auto, ProfileInput = input }, TestModels.Mse, TestModels.Sgd);
        Assert.Equal(expected, rand(1).item<float>());
        foreach (var (b, a) in model.buffers().Zip(before)) Assert.True(b.eq(a).all().item<bool>(), "a buffer changed");
    }

    [Fact]
    public void Bad_balance_options_are_refused_naming_the_option_and_the_fix()
    {
        using var input = randn(16, 16);
        ArgumentException Refused(PipelineOptions options) =>
            Assert.ThrowsAny<ArgumentException>(() => new Pipeline(Mlp10(), options, TestModels.Mse, TestModels.Sgd));

        var both = Refused(new PipelineOptions { Balance = [5, 5], BalanceMode = BalanceMode.Uniform });
        Assert.Equal("balanceMode", both.ParamName);
        Assert.Contains("not both", both.Message);
        var unmeasured = Refused(new PipelineOptions { Ranks = 2, BalanceMode = BalanceMode.Time });
        Assert.Equal("profileInput", unmeasured.ParamName);
        var unknown = Refused(new PipelineOptions { Ranks = 2, BalanceMode = (BalanceMode)7 });
        Assert.Contains("Parameters, Uniform, Time, Auto", unknown.Message);
        var count = Refused(new PipelineOptions { Ranks = 2, BalanceMode = BalanceMode.Auto, ProfileInput = input, DeviceSpeeds = [1, 1, 1] });
        Assert.Equal("deviceSpeeds", count.ParamName);
        Assert.Contains("one speed factor per rank", count.Message);
        var zero = Refused(new PipelineOptions { Ranks = 2, BalanceMode = BalanceMode.Auto, ProfileInput = input, DeviceSpeeds = [1, 0] });
        Assert.Contains("DeviceSpeeds[1] is 0", zero.Message);
        // No split fits: the pipeline's memory check refuses the fastest, naming the rank and what would fit.
        var tight = Assert.Throws<PipeSharp.Memory.MemoryBudgetExceededException>(() =>
            new Pipeline(Mlp10(), new PipelineOptions { Ranks = 2, BalanceMode = BalanceMode.Auto, ProfileInput = input, MemoryPerDevice = [2_000] },
                TestModels.Mse, TestModels.Sgd));
        Assert.Equal("memoryPerDevice", tight.ParamName);
    }
}

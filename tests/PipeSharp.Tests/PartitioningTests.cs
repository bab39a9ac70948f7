using PipeSharp.Models;
using PipeSharp.Partitioning;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

public class PartitioningTests
{
    [Fact]
    public void Cost_balance_minimises_the_largest_stage()
    {
        Assert.Equal([2, 2, 2, 2, 2], Balance.ByCost(Enumerable.Repeat(1.0, 10).ToList(), 5));
        Assert.Equal([3, 1], Balance.ByCost([1, 1, 1, 3], 2));
        Assert.Equal([1, 3], Balance.ByCost([9, 1, 1, 1], 2));
        Assert.Equal([1, 1, 1], Balance.ByCost([5, 5, 5], 3));
        var counts = Balance.ByCost([4, 1, 1, 1, 1, 4, 2, 2], 3);
        Assert.Equal(8, counts.Sum());
        Assert.Equal(6, MaxStageCost([4, 1, 1, 1, 1, 4, 2, 2], counts));
    }

    private static double MaxStageCost(double[] costs, IReadOnlyList<int> counts)
    {
        double max = 0;
        int i = 0;
        foreach (var c in counts) { max = Math.Max(max, costs.Skip(i).Take(c).Sum()); i += c; }
        return max;
    }

    [Fact]
    public void Auto_balance_by_parameter_count_puts_the_big_layer_alone()
    {
        var layers = new List<nn.Module<Tensor, Tensor>> { nn.Linear(100, 100), nn.Linear(10, 10), nn.Linear(10, 10), nn.Linear(10, 10) };
        using var pipe = new Pipeline(layers, new PipelineOptions { Ranks = 2 }, TestModels.Mse, TestModels.Sgd);
        Assert.Equal([1, 3], pipe.Balance);
    }

    [Fact]
    public void ConvNet_splits_into_the_articles_five_stages_of_two()
    {
        manual_seed(0);
        using var model = ConvNet.Create(3, 4, 10, 10);
        Assert.Equal([2, 2, 2, 2, 3], ConvNet.ConvBalance(10, 5));
        using var pipe = new Pipeline(model, new PipelineOptions { Balance = ConvNet.ConvBalance(10, 5) },
            (o, t) => nn.functional.cross_entropy(o, t), TestModels.Sgd);
        Assert.Equal(5, pipe.Stages.Count);
        Assert.Equal([0, 2, 4, 6, 8], pipe.Stages.Select(s => s.FirstLayer));
        // Stage parameters keep the model's names, so a stage's state is a slice of the model's.
        Assert.Contains("8.conv.weight", pipe.Stages[4].named_parameters().Select(p => p.name));
        Assert.Contains("10.linear.weight", pipe.Stages[4].named_parameters().Select(p => p.name));
    }

    [Fact]
    public void Micro_batches_may_be_uneven()
    {
        using var batch = arange(10).reshape(10, 1);
        var parts = MicroBatches.Split(batch, 4);
        Assert.Equal([3L, 3, 2, 2], parts.Select(p => p.shape[0]));
    }
}

public class BalanceByTimeTests
{
    [Fact]
    public void A_slow_layer_without_parameters_gets_a_stage_of_its_own()
    {
        manual_seed(0);
        var layers = new List<nn.Module<Tensor, Tensor>> { new SlowLayer(100) }; // far above any stall of the small layers on a busy machine
        for (int i = 0; i < 4; i++) layers.Add(nn.Linear(64, 64));
        Assert.Equal([3, 2], Balance.ByCost(ModelSplitter.ParameterCounts(layers), 2)); // by parameters: the slow layer looks free
        Assert.Equal([1, 4], LayerProfiler.BalanceByTime(layers, randn(8, 64), 2, repeats: 3));
    }

    [Fact]
    public void Profiling_covers_every_layer_of_a_gpt_and_leaves_no_gradients_behind()
    {
        var config = new GptConfig(VocabularySize: 50, ContextLength: 16, Layers: 2, Width: 32, Heads: 2);
        using var model = Gpt.Create(config);
        var layers = ModelSplitter.Layers(model);
        var seconds = LayerProfiler.ForwardBackwardSeconds(layers, randint(0, 50, [4, 16]), repeats: 1);
        Assert.Equal(4, seconds.Length);
        Assert.All(seconds, s => Assert.True(s > 0));
        Assert.All(model.parameters(), p => Assert.True(p.grad is null || p.grad.abs().sum().item<float>() == 0));
    }
}

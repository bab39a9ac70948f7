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
        using var pipe = new Pipeline(layers, new PipelineOptions { Stages = 2 }, TestModels.Mse, TestModels.Sgd);
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
    public void Micro_batches_may_be_uneven_and_weights_follow_their_sizes()
    {
        using var batch = arange(10).reshape(10, 1);
        var parts = MicroBatches.Split(batch, 4);
        Assert.Equal([3L, 3, 2, 2], parts.Select(p => p.shape[0]));
        Assert.Equal([0.3, 0.3, 0.2, 0.2], MicroBatches.MeanWeights(parts));
    }
}

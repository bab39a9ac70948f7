using PipeSharp.Runtime;
using PipeSharp.Verification;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>
/// What docs/architecture.md says of BatchNorm with micro-batches: it normalises each micro-batch by that
/// micro-batch's statistics, so pipelined training equals single-device training only with one micro-batch.
/// </summary>
[Collection(GlobalRandomCollection.Name)]
public sealed class MicroBatchStatisticsTests
{
    private static TorchSharp.Modules.Sequential Model()
    {
        manual_seed(3);
        // No bias before a BatchNorm (it would be removed with the mean): its gradient is round-off, which Adam
        // would blow up to steps of the learning rate.
        var model = nn.Sequential(
            ("0", nn.Sequential(nn.Linear(16, 32, hasBias: false), nn.BatchNorm1d(32), nn.ReLU())),
            ("1", nn.Sequential(nn.Linear(32, 32, hasBias: false), nn.BatchNorm1d(32), nn.ReLU())),
            ("2", nn.Linear(32, 6)));
        model.train();
        return model;
    }

    [Fact]
    public void BatchNorm_equals_single_device_training_with_one_micro_batch_and_not_with_four()
    {
        var batches = EquivalenceTests.Batches([16], 6, batchSize: 16);
        double one = EquivalenceCheck.MaxParameterDifference(Model, new PipelineOptions { Ranks = 2, MicroBatches = 1 },
            EquivalenceTests.Optimizer("adam"), EquivalenceTests.CrossEntropy, batches);
        double four = EquivalenceCheck.MaxParameterDifference(Model, new PipelineOptions { Ranks = 2, MicroBatches = 4 },
            EquivalenceTests.Optimizer("adam"), EquivalenceTests.CrossEntropy, batches);
        Assert.True(one <= 1e-5, $"1 micro-batch: {one}");
        Assert.True(four > 1e-3, $"4 micro-batches: {four} (each micro-batch is normalised by its own statistics)");
    }
}

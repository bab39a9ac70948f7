using PipeSharp.Checkpoints;
using PipeSharp.Models;
using PipeSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Recompute;

/// <summary>
/// A recomputed forward repeats the first one: dropout draws the same masks from the global generator (its state is
/// restored around the re-run), and BatchNorm's running statistics are updated once per micro-batch, not again by the
/// re-run. One rank, so that only one thread draws from the generator (ranks that are threads interleave their draws
/// in whatever order they run, with or without recomputation).
/// </summary>
[Collection(GlobalRandomCollection.Name)]
public sealed class RecomputationRandomnessTests
{
    private const double Tolerance = 1e-6;
    private static readonly GptConfig Config = new(VocabularySize: 11, ContextLength: 8, Layers: 4, Width: 16, Heads: 2, Dropout: 0.1);

    [Theory]
    [InlineData("1f1b", "full")]
    [InlineData("1f1b", "blocks")]
    [InlineData("zb-h1", "full")]
    [InlineData("interleaved", "mixed")]
    [InlineData("zb-v", "full")]
    [InlineData("zb-v", "blocks")]
    public void Dropout_draws_the_same_masks_when_recomputed(string schedule, string variant)
    {
        // 1 rank: 1 stage, or 2 stages on it (interleaved, zb-v).
        var options = new PipelineOptions { Ranks = 1, MicroBatches = 4, Schedule = schedule, ThreadsPerRank = 1 };
        var batches = RecomputationEquivalenceTests.GptBatches(3);
        double diff = RecomputationRuns.Difference(() => Gpt.Create(Config), options, RecomputationEquivalenceTests.Variant(variant), batches, Gpt.Loss);
        Assert.True(diff <= Tolerance, $"{schedule}, {variant}: max difference {diff:E2} > {Tolerance:E0}");
    }

    [Theory]
    [InlineData("1f1b", "full")]
    [InlineData("zb-h1", "blocks")]
    [InlineData("zb-v", "full")]
    [InlineData("interleaved", "mixed")]
    public void Keyed_dropout_draws_the_same_masks_when_recomputed_on_several_ranks(string schedule, string variant)
    {
        // The GPT's dropout is keyed by (seed, step, layer, sample): a backward that runs a segment again draws the
        // forward's masks on any rank, whatever order the ranks' threads run in.
        var options = new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = schedule, ThreadsPerRank = 1, DropoutSeed = 7 };
        var batches = RecomputationEquivalenceTests.GptBatches(3);
        double diff = RecomputationRuns.Difference(() => Gpt.Create(Config), options, RecomputationEquivalenceTests.Variant(variant), batches, Gpt.Loss);
        Assert.True(diff <= Tolerance, $"{schedule}, {variant}: max difference {diff:E2} > {Tolerance:E0}");
    }

    [Fact]
    public void Dropout_masks_matter_here_so_the_test_above_can_fail()
    {
        // The same comparison with the recomputed run seeded differently: other masks, other parameters.
        var options = new PipelineOptions { Ranks = 1, MicroBatches = 4, Schedule = "1f1b", ThreadsPerRank = 1 };
        var batches = RecomputationEquivalenceTests.GptBatches(3);
        double diff = RecomputationRuns.Difference(() => Gpt.Create(Config), options, Recomputation.Full, batches, Gpt.Loss,
            (pipe, x, y) => pipe.TrainStep(x, y), seed: 1, reseed: true);
        Assert.True(diff > 1e-4, $"differently seeded dropout gave parameters only {diff:E2} apart");
    }

    private static TorchSharp.Modules.Sequential BatchNormModel()
    {
        var model = nn.Sequential(
            ("0", nn.Sequential(nn.Linear(16, 32, hasBias: false), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2))),
            ("1", nn.Sequential(nn.Linear(32, 32, hasBias: false), nn.BatchNorm1d(32), nn.ReLU())),
            ("2", nn.Sequential(nn.Linear(32, 32, hasBias: false), nn.BatchNorm1d(32), nn.ReLU())),
            ("3", nn.Linear(32, 6)));
        model.train();
        return model;
    }

    [Theory]
    [InlineData("1f1b", "full")]
    [InlineData("zb-h1", "full")]
    [InlineData("zb-v", "layers")]
    public void BatchNorm_statistics_are_updated_once_per_micro_batch_when_recomputed(string schedule, string variant)
    {
        var recomputation = variant == "full" ? Recomputation.Full : Recomputation.Layers(0, 2);
        var options = new PipelineOptions { Ranks = 1, MicroBatches = 4, Schedule = schedule, ThreadsPerRank = 1 };
        var batches = EquivalenceTests.Batches([16], 6, batchSize: 16, steps: 4);
        // Parameters and buffers (running means and variances, batches tracked) of the two runs.
        double diff = RecomputationRuns.Difference(BatchNormModel, options, recomputation, batches, EquivalenceTests.CrossEntropy);
        Assert.True(diff <= Tolerance, $"max difference {diff:E2} > {Tolerance:E0}");

        manual_seed(1);
        using var model = BatchNormModel();
        using var pipe = new Pipeline(model, options with { Recomputation = recomputation }, EquivalenceTests.CrossEntropy, RecomputationRuns.Adam);
        foreach (var (x, y) in batches) pipe.TrainStep(x, y);
        var state = pipe.StateDict();
        foreach (var layer in new[] { "0", "1", "2" })
            Assert.Equal(4 * 4, state[$"{layer}.1.num_batches_tracked"].item<long>()); // 4 steps x 4 micro-batches, once each
    }
}

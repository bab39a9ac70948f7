using PipeSharp.Models;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Recompute;

/// <summary>
/// Recomputation keeps no tensor beyond its backward: what a forward saves per segment (inputs, leaves, generator
/// states), what a re-run makes, and what an input-gradient action leaves to its weight-gradient action are all
/// disposed, with the full backward and with the split one.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class RecomputationLeakTests
{
    [Theory]
    [InlineData("1f1b", "full")]
    [InlineData("zb-h1", "mixed")]
    [InlineData("zb-v", "blocks")]
    public void Training_with_recomputation_leaves_no_tensor_behind(string schedule, string variant)
    {
        manual_seed(6);
        using var model = Gpt.Create(new GptConfig(VocabularySize: 11, ContextLength: 8, Layers: 4, Width: 16, Heads: 2, Dropout: 0.1));
        using var pipe = new Pipeline(model,
            new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = schedule, ThreadsPerRank = 1, Recomputation = RecomputationEquivalenceTests.Variant(variant) },
            Gpt.Loss, ps => optim.Adam(ps, 1e-3));
        var batches = RecomputationEquivalenceTests.GptBatches(1);
        var (x, y) = batches[0];
        void Run(int steps)
        {
            for (int i = 0; i < steps; i++) pipe.TrainStep(x, y);
            pipe.Forward(x).Dispose();
        }

        Run(5); // warm-up: optimizer state, the segments' gradient flags
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long before = Tensor.TotalCount;
        Run(40);
        Assert.Equal(before, Tensor.TotalCount); // counted before any collection: a tensor left to a finaliser counts as a leak
    }
}

using PipeSharp.Boundaries;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Boundaries;

/// <summary>
/// What crosses the boundaries, counted from the step's message timeline (gpipe, stage s on rank s): a skip goes in one
/// message from the stage that makes it to the stage that reads it, and its gradient straight back; a tensor without
/// gradient (the attention mask) gets no gradient message.
/// </summary>
public class BoundaryMessageTests
{
    private const int MicroBatches = 2;

    // (kind, from rank, to rank) -> messages per micro-batch in one training step.
    private static Dictionary<(string Kind, int From, int To), int> Count(Func<TorchSharp.Modules.Sequential> model,
        List<(TensorSet Inputs, Tensor Target)> batches, IReadOnlyList<string>? inputs = null)
    {
        try
        {
            using var pipe = new Pipeline(model(),
                new PipelineOptions { Balance = [2, 2, 2, 2], MicroBatches = MicroBatches, Schedule = "gpipe", ThreadsPerRank = 1, Inputs = inputs },
                BoundaryModels.CrossEntropy, BoundaryModels.Adam);
            pipe.TrainStep(batches[0].Inputs, batches[0].Target);
            return pipe.LastStep!.Messages
                .GroupBy(m => (m.Label.Split(' ')[0], m.FromRank, m.ToRank))
                .ToDictionary(g => g.Key, g => g.Count() / MicroBatches);
        }
        finally
        {
            BoundaryModels.Dispose(batches);
        }
    }

    [Fact]
    public void A_skip_from_stage_0_goes_straight_to_the_stage_that_reads_it_and_its_gradient_straight_back()
    {
        // Stage 0: down1, down2 (skip1, skip2); 1: down3 (skip3), middle; 2: up3, up2 (reads skip2); 3: up1 (reads skip1), head.
        var counts = Count(BoundaryModels.UNet, BoundaryModels.UNetBatches(1));
        var expected = new Dictionary<(string, int, int), int>
        {
            [("activation", 0, 1)] = 1, // x
            [("activation", 0, 2)] = 1, // skip2, over stage 1
            [("activation", 0, 3)] = 1, // skip1, over stages 1 and 2
            [("activation", 1, 2)] = 2, // x and skip3 (not skip2: nothing is relayed)
            [("activation", 2, 3)] = 1, // x (not skip1)
            [("gradient", 1, 0)] = 1,
            [("gradient", 2, 0)] = 1,
            [("gradient", 3, 0)] = 1,
            [("gradient", 2, 1)] = 2,
            [("gradient", 3, 2)] = 1,
        };
        Assert.Equal(expected.OrderBy(e => e.Key), counts.OrderBy(e => e.Key));
    }

    [Fact]
    public void The_mask_goes_from_the_embedding_to_every_stage_that_reads_it_and_no_gradient_comes_back()
    {
        // Stage 0: embed (x, mask), block0; 1: block1, block2; 2: block3, block4; 3: block5, head (reads pad, an input).
        var counts = Count(BoundaryModels.Transformer, BoundaryModels.TransformerBatches(1), Models.MaskedTransformer.Inputs);
        var expected = new Dictionary<(string, int, int), int>
        {
            [("activation", 0, 1)] = 2, // x and mask
            [("activation", 0, 2)] = 1, // mask
            [("activation", 0, 3)] = 1, // mask
            [("activation", 1, 2)] = 1, // x
            [("activation", 2, 3)] = 1, // x
            [("gradient", 1, 0)] = 1, // x only
            [("gradient", 2, 1)] = 1,
            [("gradient", 3, 2)] = 1,
        };
        Assert.Equal(expected.OrderBy(e => e.Key), counts.OrderBy(e => e.Key));
    }

    [Fact]
    public void A_model_of_one_value_sends_one_message_each_way_between_neighbours_only()
    {
        using var pipe = new Pipeline(TestModels.Layers(4), new PipelineOptions { Ranks = 4, MicroBatches = 2, Schedule = "gpipe", ThreadsPerRank = 1 },
            TestModels.Mse, TestModels.Sgd);
        using var x = randn(8, 16);
        using var y = randn(8, 16);
        pipe.TrainStep(x, y);
        var pairs = pipe.LastStep!.Messages.Select(m => (m.FromRank, m.ToRank)).ToList();
        Assert.Equal(2 * 3 * 2, pairs.Count); // 3 boundaries, both ways, 2 micro-batches
        Assert.All(pairs, p => Assert.Equal(1, Math.Abs(p.FromRank - p.ToRank)));
        Assert.All(pipe.LastStep.Messages, m => Assert.DoesNotContain("value", m.Label));
    }

    [Fact]
    public void Integer_ids_cross_a_boundary_without_a_gradient_message()
    {
        // Stage 0 passes the ids on (as they are) beside its hidden state; stage 1 embeds them and adds them in.
        manual_seed(4);
        var model = SetModels.Sequential([
            ("hidden", new FunctionLayer("hidden", ["ids"], ["ids", "x"], t => new TensorSet { ["ids"] = t["ids"], ["x"] = t["ids"].to(ScalarType.Float32) })),
            ("0", nn.Linear(6, 8)),
            ("embed", new EmbedAndAdd()),
            ("head", nn.Linear(8, 3))]);
        using var ids = randint(0, 5, [8, 6]);
        using var y = randint(0, 3, [8]);
        using var pipe = new Pipeline(model, new PipelineOptions { Balance = [2, 2], MicroBatches = 2, ThreadsPerRank = 1, Inputs = ["ids"] },
            BoundaryModels.CrossEntropy, BoundaryModels.Adam);
        pipe.TrainStep(new TensorSet { ["ids"] = ids }, y);
        var labels = pipe.LastStep!.Messages.Select(m => (m.Label.Split(' ')[0], m.FromRank, m.ToRank)).ToList();
        Assert.Equal(2 * 2, labels.Count(l => l == ("activation", 0, 1))); // x and ids, 2 micro-batches
        Assert.Equal(2, labels.Count(l => l == ("gradient", 1, 0)));       // x only
    }

    private sealed class EmbedAndAdd : SetLayer
    {
        private readonly TorchSharp.Modules.Embedding embedding = nn.Embedding(5, 8);

        public EmbedAndAdd() : base("embed", ["x", "ids"], ["x"]) => RegisterComponents();

        public override TensorSet forward(TensorSet t) => TensorSet.Of(t["x"] + embedding.call(t["ids"]).sum(1));
    }
}

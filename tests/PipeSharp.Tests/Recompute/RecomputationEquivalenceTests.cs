using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using PipeSharp.Tests.Boundaries;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Recompute;

/// <summary>
/// Training with activation recomputation gives the parameters of training without it (within 1e-6), for every
/// schedule (the split backward of zb-h1 and zb-v included), full and selected recomputation, a tied embedding whose
/// copies sit on the first and last stages, in-process replicas, and stages that pass several tensors.
/// </summary>
public class RecomputationEquivalenceTests
{
    private const double Tolerance = 1e-6;
    private static readonly GptConfig Config = new(VocabularySize: 11, ContextLength: 8, Layers: 4, Width: 16, Heads: 2);

    // The GPT's 6 layers: embed, block0..3, head. "blocks" recomputes each block alone; "mixed" the embedding, one
    // block and the tied head, so stages have kept and recomputed segments side by side.
    internal static Recomputation Variant(string name) => name switch
    {
        "full" => Recomputation.Full,
        "blocks" => Recomputation.Layers(1, 2, 3, 4),
        "mixed" => Recomputation.Layers(0, 2, 5),
        "stage0" => Recomputation.Stages(0),
        _ => throw new ArgumentException(name),
    };

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var schedule in ScheduleGenerators.Names)
            foreach (var variant in new[] { "full", "blocks", "mixed" })
                data.Add(schedule, variant);
        return data;
    }

    internal static List<(Tensor, Tensor)> GptBatches(int steps, int batch = 8)
    {
        var gen = new Generator(5);
        return Enumerable.Range(0, steps).Select(_ =>
        {
            var tokens = randint(0, Config.VocabularySize, [batch, Config.ContextLength + 1], generator: gen);
            return (tokens[.., ..Config.ContextLength], tokens[.., 1..]);
        }).ToList();
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Gpt_with_recomputation_trains_as_without_it(string schedule, string variant)
    {
        // 2 ranks: 2 stages, or 4 with interleaved and zb-v (2 per rank); the tied embedding spans the first and last stage.
        var options = new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = schedule, ThreadsPerRank = 1 };
        double diff = RecomputationRuns.Difference(() => Gpt.Create(Config), options, Variant(variant), GptBatches(3), Gpt.Loss);
        Assert.True(diff <= Tolerance, $"{schedule}, {variant}: max difference {diff:E2} > {Tolerance:E0}");
    }

    [Theory]
    [InlineData("1f1b")]
    [InlineData("zb-v")]
    public void Recomputing_one_stage_only_trains_as_without_it(string schedule)
    {
        var options = new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = schedule, ThreadsPerRank = 1 };
        double diff = RecomputationRuns.Difference(() => Gpt.Create(Config), options, Variant("stage0"), GptBatches(3), Gpt.Loss);
        Assert.True(diff <= Tolerance, $"max difference {diff:E2}");
    }

    [Theory]
    [InlineData("1f1b", "full")]
    [InlineData("zb-h1", "blocks")]
    public void Replicas_with_recomputation_train_as_without_it(string schedule, string variant)
    {
        var options = new PipelineOptions { Ranks = 2, Replicas = 2, MicroBatches = 2, Schedule = schedule, ThreadsPerRank = 1 };
        double diff = RecomputationRuns.Difference(() => Gpt.Create(Config), options, Variant(variant), GptBatches(3), Gpt.Loss);
        Assert.True(diff <= Tolerance, $"max difference {diff:E2}");
    }

    public static TheoryData<string, string, string> BoundaryCases()
    {
        var data = new TheoryData<string, string, string>();
        foreach (var model in new[] { "unet", "transformer" })
            foreach (var schedule in new[] { "1f1b", "zb-h1", "zb-v" })
                foreach (var variant in new[] { "full", "mixed" })
                    data.Add(model, schedule, variant);
        return data;
    }

    // Stages that pass several tensors: the U-Net's skips go from stage 0 to stages 2 and 3 (with zb-v, 2 ranks hold
    // the 4 stages); the transformer's stages pass hidden state and a float mask that needs no gradient.
    [Theory]
    [MemberData(nameof(BoundaryCases))]
    public void Stages_passing_several_tensors_train_with_recomputation_as_without_it(string model, string schedule, string variant)
    {
        bool unet = model == "unet";
        var batches = unet ? BoundaryModels.UNetBatches(3) : BoundaryModels.TransformerBatches(3);
        try
        {
            int ranks = schedule == "zb-v" ? 2 : 4;
            var options = new PipelineOptions
            {
                Ranks = ranks, Balance = [2, 2, 2, 2], MicroBatches = 4, Schedule = schedule, ThreadsPerRank = 1,
                Inputs = unet ? null : ["ids", "pad"],
            };
            // mixed: the first layer of each stage recomputed, the second kept.
            var recomputation = variant == "full" ? Recomputation.Full : Recomputation.Layers(0, 2, 4, 6);
            double diff = RecomputationRuns.Difference(unet ? BoundaryModels.UNet : BoundaryModels.Transformer, options, recomputation, batches,
                BoundaryModels.CrossEntropy, (pipe, x, y) => pipe.TrainStep(x, y));
            Assert.True(diff <= Tolerance, $"max difference {diff:E2}");
        }
        finally
        {
            BoundaryModels.Dispose(batches);
        }
    }
}

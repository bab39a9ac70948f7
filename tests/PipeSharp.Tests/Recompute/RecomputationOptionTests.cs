using PipeSharp.Models;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Recompute;

/// <summary>What <see cref="Recomputation"/> accepts, how it cuts stages into segments, and what a pipeline refuses before it starts.</summary>
public class RecomputationOptionTests
{
    [Fact]
    public void Text_reads_as_none_full_or_layer_indices()
    {
        Assert.Equal(Recomputation.None, Recomputation.Parse(" None "));
        Assert.Equal(Recomputation.Full, Recomputation.Parse("full"));
        Assert.Equal(Recomputation.Layers(1, 2, 4), Recomputation.Parse("4,1,2"));
        Assert.Equal("layers 1,2,4", Recomputation.Parse("4, 1, 2").ToString());
        Assert.Throws<FormatException>(() => Recomputation.Parse("1,two"));
        Assert.Throws<FormatException>(() => Recomputation.Parse(""));
        Assert.Throws<ArgumentException>(() => Recomputation.Layers());
        Assert.Throws<ArgumentOutOfRangeException>(() => Recomputation.Stages(-1));
    }

    [Fact]
    public void Selected_layers_are_segments_of_their_own_between_kept_runs()
    {
        // A stage of model layers 3..8: 4 and 5 recomputed each alone, 3 kept, 6..8 kept together.
        var segments = Recomputation.Layers(4, 5, 20).SegmentsOf(stage: 1, firstLayer: 3, layerCount: 6)!;
        Assert.Equal([new StageSegment(0, 1, false), new StageSegment(1, 1, true), new StageSegment(2, 1, true), new StageSegment(3, 3, false)], segments);
        Assert.Null(Recomputation.Layers(0).SegmentsOf(1, 3, 6)); // nothing of this stage
        Assert.Equal([new StageSegment(0, 6, true)], Recomputation.Full.SegmentsOf(1, 3, 6)!);
        Assert.Equal([new StageSegment(0, 6, true)], Recomputation.Stages(1).SegmentsOf(1, 3, 6)!);
        Assert.Null(Recomputation.Stages(0).SegmentsOf(1, 3, 6));
        Assert.True(Recomputation.Layers(4).Recomputes(1, 4));
        Assert.False(Recomputation.Stages(0).Recomputes(1, 4));
    }

    [Theory]
    [InlineData("layers", "Recomputation.Layers names layer 6, but the model has 6 layers (0 to 5)")]
    [InlineData("stages", "Recomputation.Stages names stage 2, but the pipeline has 2 stages (0 to 1)")]
    public void Indices_beyond_the_model_are_refused_before_anything_starts(string kind, string message)
    {
        using var model = Gpt.Create(new GptConfig(VocabularySize: 11, ContextLength: 8, Layers: 4, Width: 16, Heads: 2));
        var recomputation = kind == "layers" ? Recomputation.Layers(1, 6) : Recomputation.Stages(2);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 2, Recomputation = recomputation }, Gpt.Loss, ps => optim.SGD(ps, 0.1)));
        Assert.Equal("recomputation", e.ParamName);
        Assert.Contains(message, e.Message);
    }
}

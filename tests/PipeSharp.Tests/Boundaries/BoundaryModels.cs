using PipeSharp.Boundaries;
using PipeSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Boundaries;

/// <summary>The two models of the boundary tests, their batches, optimizer and loss.</summary>
internal static class BoundaryModels
{
    public const int BatchSize = 16;

    // 8 layers: down1..3, middle, up3..1, head. With [2,2,2,2] stage 0 makes skip1 and skip2, read in stages 3 and 2.
    public static TorchSharp.Modules.Sequential UNet()
    {
        manual_seed(11);
        return UNetLike.Create(inputSize: 12, width: 16, depth: 3, classes: 5);
    }

    // 8 layers: embed, block0..5, head. The mask made in stage 0 is read by every later stage.
    public static TorchSharp.Modules.Sequential Transformer()
    {
        manual_seed(12);
        return MaskedTransformer.Create(vocabulary: 11, context: 8, width: 16, heads: 2, blocks: 6, classes: 3);
    }

    public static List<(TensorSet Inputs, Tensor Target)> UNetBatches(int steps)
    {
        var generator = new Generator(21);
        return Enumerable.Range(0, steps)
            .Select(_ => (TensorSet.Of(randn([BatchSize, 12], generator: generator)), randint(0, 5, [BatchSize], generator: generator)))
            .ToList();
    }

    public static List<(TensorSet Inputs, Tensor Target)> TransformerBatches(int steps)
    {
        var generator = new Generator(22);
        return Enumerable.Range(0, steps).Select(_ => MaskedTransformer.Batch(generator, BatchSize, 11, 8, 3)).ToList();
    }

    public static optim.Optimizer Adam(IEnumerable<TorchSharp.Modules.Parameter> parameters) => optim.Adam(parameters, 1e-3);

    public static Tensor CrossEntropy(Tensor output, Tensor target) => nn.functional.cross_entropy(output, target);

    public static void Dispose(IEnumerable<(TensorSet Inputs, Tensor Target)> batches)
    {
        foreach (var (x, y) in batches)
        {
            foreach (var t in x.Values) t.Dispose();
            y.Dispose();
        }
    }
}

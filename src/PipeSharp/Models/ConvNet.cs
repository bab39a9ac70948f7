using PipeSharp.Construction;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Models;

/// <summary>
/// The article's example: a stack of 3x3 convolution layers (each with a ReLU) and a classifier head. With 10
/// convolution layers and 5 stages of 2, the head rides on the last stage (balance 2,2,2,2,3).
/// </summary>
public static class ConvNet
{
    /// <summary>
    /// Entries 0..<paramref name="convLayers"/>-1 are the convolution layers (same spatial size, padding 1); the last
    /// entry is the head (global average pool, flatten, linear). No batch norm, so micro-batching does not change
    /// the result.
    /// </summary>
    public static TorchSharp.Modules.Sequential Create(int inChannels = 3, int channels = 16, int convLayers = 10, int classes = 10)
    {
        if (convLayers < 1) throw new ArgumentOutOfRangeException(nameof(convLayers), convLayers, "A ConvNet needs at least one convolution layer.");
        var layers = new List<(string, nn.Module<Tensor, Tensor>)>();
        for (int i = 0; i <= convLayers; i++) layers.Add((i.ToString(), Layer(inChannels, channels, convLayers, classes, i)));
        return nn.Sequential(layers);
    }

    /// <summary>
    /// The same model as a spec (entries named as in <see cref="Create"/>): a pipeline made from it builds only its own
    /// stages' layers, layer i under the seed of (<paramref name="seed"/>, i).
    /// Its values come from the seed alone, not from the global generator's state as <see cref="Create"/>'s do.
    /// </summary>
    public static ModelSpec Spec(long seed, int inChannels = 3, int channels = 16, int convLayers = 10, int classes = 10)
    {
        if (convLayers < 1) throw new ArgumentOutOfRangeException(nameof(convLayers), convLayers, "A ConvNet needs at least one convolution layer.");
        return new ModelSpec(Enumerable.Range(0, convLayers + 1).Select(i => new LayerSpec(i.ToString(),
            _ => Layer(inChannels, channels, convLayers, classes, i),
            i < convLayers ? (double)(i == 0 ? inChannels : channels) * channels * 9 + channels : (double)channels * classes + classes)), seed);
    }

    private static nn.Module<Tensor, Tensor> Layer(int inChannels, int channels, int convLayers, int classes, int i) =>
        i < convLayers
            ? nn.Sequential(
                ("conv", nn.Conv2d(i == 0 ? inChannels : channels, channels, kernel_size: 3, padding: 1)),
                ("relu", nn.ReLU()))
            : nn.Sequential(
                ("pool", nn.AdaptiveAvgPool2d(1)),
                ("flatten", nn.Flatten()),
                ("linear", nn.Linear(channels, classes)));

    /// <summary>The article's split of <see cref="Create"/>'s model into <paramref name="stages"/> stages: the
    /// convolution layers spread evenly (earlier stages get the remainder), the head on the last stage.</summary>
    public static int[] ConvBalance(int convLayers, int stages)
    {
        if (stages < 1 || stages > convLayers)
            throw new ArgumentOutOfRangeException(nameof(stages), stages, $"Use between 1 and {convLayers} stages for {convLayers} convolution layers.");
        var balance = Enumerable.Range(0, stages).Select(s => convLayers / stages + (s < convLayers % stages ? 1 : 0)).ToArray();
        balance[^1] += 1;
        return balance;
    }
}

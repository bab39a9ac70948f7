using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Models;

/// <summary>A multi-layer perceptron whose layers are the units a pipeline splits.</summary>
public static class Mlp
{
    /// <summary>
    /// <paramref name="linearLayers"/> linear layers with ReLU between them. Entry i of the result is linear layer i
    /// (with its ReLU), so a pipeline cuts between linear layers.
    /// </summary>
    public static TorchSharp.Modules.Sequential Create(int inputSize, int hiddenSize, int outputSize, int linearLayers)
    {
        if (linearLayers < 1) throw new ArgumentOutOfRangeException(nameof(linearLayers), linearLayers, "An MLP needs at least one layer.");
        var layers = new List<(string, nn.Module<Tensor, Tensor>)>();
        for (int i = 0; i < linearLayers; i++)
        {
            int fanIn = i == 0 ? inputSize : hiddenSize;
            if (i == linearLayers - 1)
                layers.Add((i.ToString(), nn.Linear(fanIn, outputSize)));
            else
                layers.Add((i.ToString(), nn.Sequential(("linear", nn.Linear(fanIn, hiddenSize)), ("relu", nn.ReLU()))));
        }
        return nn.Sequential(layers);
    }
}

using PipeSharp.Construction;
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
        for (int i = 0; i < linearLayers; i++) layers.Add((i.ToString(), Layer(inputSize, hiddenSize, outputSize, linearLayers, i)));
        return nn.Sequential(layers);
    }

    /// <summary>
    /// The same model as a spec (layer i named <c>i</c>, as in <see cref="Create"/>): a pipeline made from it builds
    /// only its own stages' layers, layer i under the seed of (<paramref name="seed"/>, i).
    /// Its values come from the seed alone, not from the global generator's state as <see cref="Create"/>'s do.
    /// </summary>
    public static ModelSpec Spec(int inputSize, int hiddenSize, int outputSize, int linearLayers, long seed)
    {
        if (linearLayers < 1) throw new ArgumentOutOfRangeException(nameof(linearLayers), linearLayers, "An MLP needs at least one layer.");
        return new ModelSpec(Enumerable.Range(0, linearLayers).Select(i =>
        {
            int fanIn = i == 0 ? inputSize : hiddenSize, fanOut = i == linearLayers - 1 ? outputSize : hiddenSize;
            return new LayerSpec(i.ToString(), _ => Layer(inputSize, hiddenSize, outputSize, linearLayers, i), (double)fanIn * fanOut + fanOut);
        }), seed);
    }

    private static nn.Module<Tensor, Tensor> Layer(int inputSize, int hiddenSize, int outputSize, int linearLayers, int i)
    {
        int fanIn = i == 0 ? inputSize : hiddenSize;
        return i == linearLayers - 1
            ? nn.Linear(fanIn, outputSize)
            : nn.Sequential(("linear", nn.Linear(fanIn, hiddenSize)), ("relu", nn.ReLU()));
    }
}

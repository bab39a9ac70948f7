using PipeSharp.Construction;
using PipeSharp.Models;
using TorchSharp.Modules;

namespace PipeSharp.Cli.Commands;

/// <summary>A built-in model with the synthetic data it trains on.</summary>
/// <param name="Name">The name on the command line.</param>
/// <param name="Description">One line for the output.</param>
/// <param name="SampleShape">The shape of one input sample.</param>
/// <param name="Classes">Number of classes of the synthetic task.</param>
/// <param name="Create">Makes the model (seed the generator first for reproducible weights).</param>
/// <param name="Spec">The same model as a spec for a seed (train builds through it: each process only its own stages); null for verification.</param>
/// <param name="DefaultBalance">
/// The split into a number of stages when no balance is given and each stage holds one model piece; null (and with
/// several chunks per stage): by parameter count.
/// </param>
internal sealed record BuiltInModel(
    string Name, string Description, long[] SampleShape, int Classes,
    Func<Sequential> Create, Func<int, int[]>? DefaultBalance = null, Func<long, ModelSpec>? Spec = null);

internal static class BuiltInModels
{
    public static readonly string[] Names = ["mlp", "cnn"];

    /// <summary>The models <c>train</c> uses.</summary>
    public static BuiltInModel ForTraining(string name) => name switch
    {
        "mlp" => new("mlp", "MLP, 8 linear layers 64 -> 256 -> ... -> 10 with ReLU; input 64 features, 10 classes",
            [64], 10, () => Mlp.Create(inputSize: 64, hiddenSize: 256, outputSize: 10, linearLayers: 8),
            Spec: seed => Mlp.Spec(inputSize: 64, hiddenSize: 256, outputSize: 10, linearLayers: 8, seed)),
        "cnn" => new("cnn", "ConvNet, 10 conv layers (3x3, 16 channels, ReLU) + head (pool, linear); input 3x16x16, 10 classes",
            [3, 16, 16], 10, () => ConvNet.Create(inChannels: 3, channels: 16, convLayers: 10, classes: 10),
            stages => ConvNet.ConvBalance(10, stages), seed => ConvNet.Spec(seed, inChannels: 3, channels: 16, convLayers: 10, classes: 10)),
        _ => throw new ArgumentException($"Unknown model '{name}'. Use one of: {string.Join(", ", Names)}."),
    };

    /// <summary>The small models <c>verify</c> checks (the same ones the test suite uses).</summary>
    public static BuiltInModel ForVerification(string name) => name switch
    {
        "mlp" => new("mlp", "MLP 16 -> 32 -> 6, 10 linear layers (zb-v with 5 stages needs 10 pieces)", [16], 6,
            () => Mlp.Create(inputSize: 16, hiddenSize: 32, outputSize: 6, linearLayers: 10)),
        "cnn" => new("cnn", "ConvNet, 10 conv layers of 4 channels + head; input 3x8x8", [3, 8, 8], 10,
            () => ConvNet.Create(inChannels: 3, channels: 4, convLayers: 10, classes: 10),
            stages => ConvNet.ConvBalance(10, stages)),
        _ => throw new ArgumentException($"Unknown model '{name}'. Use one of: {string.Join(", ", Names)}."),
    };
}

using PipeSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Bench;

/// <summary>
/// The benchmark's model and data: an MLP of 4 linear layers 1024 wide (input 1024, hidden 1024, output 1024,
/// ReLU between), batch 256, MSE loss against a random target, plain SGD. Every variant gets its own copy of the
/// model with the same initial weights, and the same batch.
/// </summary>
internal sealed class Workload : IDisposable
{
    public const int Width = 1024;
    public const int Layers = 4;
    public const int Batch = 256;
    public const int MicroBatches = 8;
    public const int Stages = 2;
    public const double LearningRate = 1e-3;
    private const int Seed = 1234;

    public Workload()
    {
        using var _ = torch.NewDisposeScope();
        var g = new Generator(Seed);
        Input = torch.randn([Batch, Width], generator: g).DetachFromDisposeScope();
        Target = torch.randn([Batch, Width], generator: g).DetachFromDisposeScope();
    }

    /// <summary>The batch, [256, 1024].</summary>
    public Tensor Input { get; }

    /// <summary>The regression target, [256, 1024].</summary>
    public Tensor Target { get; }

    /// <summary>A fresh model; every call gives the same initial weights.</summary>
    public static TorchSharp.Modules.Sequential CreateModel()
    {
        torch.manual_seed(Seed);
        return Mlp.Create(Width, Width, Width, Layers);
    }

    public static Tensor Loss(Tensor output, Tensor target) => nn.functional.mse_loss(output, target);

    public static optim.Optimizer CreateOptimizer(IEnumerable<TorchSharp.Modules.Parameter> parameters) =>
        optim.SGD(parameters, LearningRate);

    public static string Describe() =>
        $"MLP {Layers} linear layers, {Width} in / {Width} hidden / {Width} out, ReLU between; batch {Batch}; " +
        $"MSE loss vs random target; SGD lr {LearningRate}; float32, CPU";

    public void Dispose()
    {
        Input.Dispose();
        Target.Dispose();
    }
}

using PipeSharp.Construction;
using PipeSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Planning;

/// <summary>A linear layer with ReLU that counts its forwards (in every copy built from one spec).</summary>
internal sealed class CountingLinear : nn.Module<Tensor, Tensor>
{
    private readonly TorchSharp.Modules.Linear _linear;
    private readonly StrongBox<int> _count;

    public CountingLinear(int input, int output, StrongBox<int> count) : base("counting")
    {
        _linear = nn.Linear(input, output);
        _count = count;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        Interlocked.Increment(ref _count.Value);
        return nn.functional.relu(_linear.call(x));
    }
}

internal sealed class StrongBox<T>(T value)
{
    public T Value = value;
}

internal static class PlanningModels
{
    public const int Features = 32, Width = 128, Classes = 8;

    /// <summary>A 6-layer MLP as a spec, and a sample of n samples.</summary>
    public static ModelSpec Mlp(int layers = 6, int width = Width) => PipeSharp.Models.Mlp.Spec(Features, width, Classes, layers, seed: 3);

    /// <summary>An MLP of counting layers.</summary>
    public static ModelSpec Counting(StrongBox<int> count, int layers = 4) => new(Enumerable.Range(0, layers).Select(i =>
        new LayerSpec(i.ToString(), _ => new CountingLinear(i == 0 ? Features : Width, i == layers - 1 ? Classes : Width, count))), seed: 4);

    public static (Tensor Input, Tensor Target) Sample(int samples)
    {
        using var g = new Generator(seed: 11);
        return (randn([samples, Features], generator: g), randint(0, Classes, [samples], generator: g));
    }

    public static Tensor Loss(Tensor output, Tensor target) => nn.functional.cross_entropy(output, target);

    public static optim.Optimizer Adam(IEnumerable<TorchSharp.Modules.Parameter> ps) => optim.Adam(ps, 1e-3);
}

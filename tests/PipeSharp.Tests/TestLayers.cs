using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>A layer that passes its input through, but throws on its N-th call (counting from 0).</summary>
internal sealed class ThrowingLayer(int throwOnCall, string message = "injected failure") : nn.Module<Tensor, Tensor>("throwing")
{
    private int _calls;

    public override Tensor forward(Tensor input)
    {
        if (Interlocked.Increment(ref _calls) - 1 == throwOnCall) throw new InvalidOperationException(message);
        return input.alias();
    }
}

/// <summary>A layer that passes its input through after sleeping (a slow stage).</summary>
internal sealed class SlowLayer(int milliseconds) : nn.Module<Tensor, Tensor>("slow")
{
    public override Tensor forward(Tensor input)
    {
        Thread.Sleep(milliseconds);
        return input.alias();
    }
}

internal static class TestModels
{
    /// <summary>Linear layers 16 wide with ReLUs between; <paramref name="extra"/> is inserted at <paramref name="at"/>.</summary>
    public static List<nn.Module<Tensor, Tensor>> Layers(int count, nn.Module<Tensor, Tensor>? extra = null, int at = 0)
    {
        manual_seed(3);
        var layers = new List<nn.Module<Tensor, Tensor>>();
        for (int i = 0; i < count; i++) layers.Add(nn.Sequential(nn.Linear(16, 16), nn.ReLU()));
        if (extra != null) layers.Insert(at, extra);
        return layers;
    }

    public static Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> Sgd => ps => optim.SGD(ps, 0.01);

    public static Tensor Mse(Tensor output, Tensor target) => nn.functional.mse_loss(output, target);
}

/// <summary>
/// Passes its input through, but a sample whose first feature is at least <see cref="Marker"/> comes out as NaN (a
/// layer that produces NaN for a given input), so its loss and every gradient before it are NaN.
/// </summary>
internal sealed class NaNForMarkedSamples() : nn.Module<Tensor, Tensor>("nan-for-marked")
{
    public const float Marker = 1e6f;

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var marked = input.select(1, 0).ge(Marker).unsqueeze(1).expand_as(input);
        return where(marked, full_like(input, float.NaN), input).MoveToOuterDisposeScope();
    }
}

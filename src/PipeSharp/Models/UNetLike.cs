using PipeSharp.Boundaries;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Models;

/// <summary>
/// A small U-Net-like network on feature vectors, for models whose stages pass several tensors: each down layer keeps
/// its output as a skip (<c>skip1</c>, <c>skip2</c>, ...) that the matching up layer, far later in the model, joins to
/// the main value. Cut into stages, a skip made in stage 0 is read in stage 2 or later.
/// </summary>
public static class UNetLike
{
    /// <summary>
    /// Layers: <c>down1</c>..<c>down{depth}</c> (linear + tanh, each also writing its skip), <c>middle</c>,
    /// <c>up{depth}</c>..<c>up1</c> (linear + tanh of the main value joined with its skip), <c>head</c> (linear to
    /// <paramref name="classes"/>): 2 x depth + 2 layers. Input: <c>x</c> of shape [batch, <paramref name="inputSize"/>].
    /// </summary>
    public static TorchSharp.Modules.Sequential Create(int inputSize, int width, int depth, int classes)
    {
        if (depth < 1) throw new ArgumentOutOfRangeException(nameof(depth), depth, "a U-Net needs at least one level.");
        var layers = new List<(string, nn.IModule<Tensor, Tensor>)>();
        for (int k = 1; k <= depth; k++) layers.Add(($"down{k}", new Down(k == 1 ? inputSize : width, width, $"skip{k}")));
        layers.Add(("middle", nn.Sequential(("linear", nn.Linear(width, width)), ("tanh", nn.Tanh()))));
        for (int k = depth; k >= 1; k--) layers.Add(($"up{k}", new Up(width, $"skip{k}")));
        layers.Add(("head", nn.Linear(width, classes)));
        return SetModels.Sequential(layers);
    }

    /// <summary>Linear + tanh; the result is both the main value and the skip.</summary>
    private sealed class Down : SetLayer
    {
        private readonly TorchSharp.Modules.Linear linear;
        private readonly string _skip;

        public Down(int inputs, int outputs, string skip) : base("down", [TensorSet.DefaultName], [TensorSet.DefaultName, skip])
        {
            linear = nn.Linear(inputs, outputs);
            _skip = skip;
            RegisterComponents();
        }

        public override TensorSet forward(TensorSet input)
        {
            var h = torch.tanh(linear.call(input[TensorSet.DefaultName]));
            return new TensorSet { [TensorSet.DefaultName] = h, [_skip] = h };
        }
    }

    /// <summary>Linear + tanh of the main value joined with the skip.</summary>
    private sealed class Up : SetLayer
    {
        private readonly TorchSharp.Modules.Linear linear;
        private readonly string _skip;

        public Up(int width, string skip) : base("up", [TensorSet.DefaultName, skip], [TensorSet.DefaultName])
        {
            linear = nn.Linear(2 * width, width);
            _skip = skip;
            RegisterComponents();
        }

        public override TensorSet forward(TensorSet input) =>
            TensorSet.Of(torch.tanh(linear.call(torch.cat([input[TensorSet.DefaultName], input[_skip]], 1))));
    }
}

using PipeSharp.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Partitioning;

/// <summary>
/// One stage: a run of consecutive layers of the original model, applied in order. Its parameters keep the
/// original model's names (<c>3.weight</c> for layer "3"), so a stage's state dict is a slice of the model's.
/// </summary>
public sealed class StageModule : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor>[] _layers;

    /// <summary>Wraps <paramref name="layers"/>, which are layers <paramref name="firstLayer"/>.. of the model.</summary>
    /// <param name="index">The stage number.</param>
    /// <param name="firstLayer">The model index of the first layer.</param>
    /// <param name="layers">The layers, in order.</param>
    /// <param name="names">The layers' names in the model (default: their indices).</param>
    public StageModule(int index, int firstLayer, IReadOnlyList<nn.Module<Tensor, Tensor>> layers, IReadOnlyList<string>? names = null)
        : base($"stage{index}")
    {
        Index = index;
        FirstLayer = firstLayer;
        _layers = layers.ToArray();
        for (int i = 0; i < _layers.Length; i++) register_module(names?[i] ?? (firstLayer + i).ToString(), _layers[i]);
    }

    /// <summary>The stage number, 0 for the stage that takes the model's input.</summary>
    public int Index { get; }

    /// <summary>Index in the model of this stage's first layer.</summary>
    public int FirstLayer { get; }

    /// <summary>Number of layers in this stage.</summary>
    public int LayerCount => _layers.Length;

    /// <summary>Number of parameter elements of this stage, a parameter used by several of its layers counted once.</summary>
    public long ParameterCount => Native.ParameterIdentity.Distinct(parameters()).Sum(p => p.numel());

    /// <summary>Runs the layers in order (through <c>call</c>, so their forward hooks run).</summary>
    public override Tensor forward(Tensor input)
    {
        // Intermediate results are disposed here; the autograd graph keeps what backward needs.
        Tensor x = input;
        foreach (var layer in _layers)
        {
            var y = layer.call(x);
            if (!ReferenceEquals(x, input)) x.Dispose();
            x = y;
        }
        return x;
    }
}

using PipeSharp.Native;
using PipeSharp.Boundaries;
using PipeSharp.Randomness;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Partitioning;

/// <summary>
/// One stage: a run of consecutive layers of the original model, applied in order. Its parameters keep the
/// original model's names (<c>3.weight</c> for layer "3"), so a stage's state dict is a slice of the model's.
/// Layers map one tensor to one tensor, or are <see cref="SetLayer"/>s that read and write named tensors.
/// </summary>
public sealed class StageModule : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module[] _layers;
    private readonly LayerSignature[] _signatures;

    /// <summary>Wraps <paramref name="layers"/>, which are layers <paramref name="firstLayer"/>.. of the model.</summary>
    /// <param name="index">The stage number.</param>
    /// <param name="firstLayer">The model index of the first layer.</param>
    /// <param name="layers">The layers, in order: <c>nn.Module&lt;Tensor, Tensor&gt;</c> or <see cref="SetLayer"/>.</param>
    /// <param name="names">The layers' names in the model (default: their indices).</param>
    public StageModule(int index, int firstLayer, IReadOnlyList<nn.Module> layers, IReadOnlyList<string>? names = null)
        : base($"stage{index}")
    {
        Index = index;
        FirstLayer = firstLayer;
        _layers = layers.ToArray();
        _signatures = _layers.Select((l, i) => LayerSignature.Of(l, firstLayer + i, names?[i])).ToArray();
        for (int i = 0; i < _layers.Length; i++) register_module(names?[i] ?? (firstLayer + i).ToString(), _layers[i]);
        KeyedDropout.NumberLayers(_layers, firstLayer); // keyed by the model's layer index, whatever the cut
    }

    /// <summary>The stage number, 0 for the stage that takes the model's input.</summary>
    public int Index { get; }

    /// <summary>Index in the model of this stage's first layer.</summary>
    public int FirstLayer { get; }

    /// <summary>Number of layers in this stage.</summary>
    public int LayerCount => _layers.Length;

    /// <summary>Number of parameter elements of this stage, a parameter used by several of its layers counted once.</summary>
    public long ParameterCount => Native.ParameterIdentity.Distinct(parameters()).Sum(p => p.numel());

    /// <summary>
    /// Runs the layers in order (through <c>call</c>, so their forward hooks run). A stage with set layers takes its
    /// input as <see cref="TensorSet.DefaultName"/> and returns the tensor of that name; use the pipeline for a stage
    /// that takes several tensors.
    /// </summary>
    public override Tensor forward(Tensor input)
    {
        if (_signatures.All(s => s.IsSingle))
        {
            // Intermediate results are disposed here; the autograd graph keeps what backward needs.
            Tensor x = input;
            foreach (var layer in _layers)
            {
                var y = ((nn.Module<Tensor, Tensor>)layer).call(x);
                if (!ReferenceEquals(x, input)) x.Dispose();
                x = y;
            }
            return x;
        }
        var values = Run(TensorSet.Of(input));
        return values.TryGetValue(TensorSet.DefaultName, out var output)
            ? output
            : throw new InvalidOperationException($"stage {Index} does not end with a tensor named '{TensorSet.DefaultName}'; it ends with: {values}.");
    }

    /// <summary>
    /// Runs the layers on named tensors: each layer gets the latest tensors of the names it reads and its writes replace
    /// earlier ones. Returns every named tensor at the end of the stage (the inputs included, unless replaced).
    /// </summary>
    internal TensorSet Run(TensorSet inputs) => LayerRunner.Run(_layers, _signatures, inputs, i => $"layer {Describe(i)} of stage {Index}");

    private string Describe(int i) => $"{FirstLayer + i} ('{named_children().ElementAt(i).name}')";
}

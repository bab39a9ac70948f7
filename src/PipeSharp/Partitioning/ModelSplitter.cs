using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Partitioning;

/// <summary>Cuts a model, given as an ordered list of layers, into consecutive stages.</summary>
internal static class ModelSplitter
{
    /// <summary>
    /// The layers of a <see cref="TorchSharp.Modules.Sequential"/>, in order. Each must map one tensor to one tensor.
    /// </summary>
    public static IReadOnlyList<nn.Module<Tensor, Tensor>> Layers(TorchSharp.Modules.Sequential model)
    {
        var layers = new List<nn.Module<Tensor, Tensor>>();
        int i = 0;
        foreach (var child in model.children())
        {
            if (child is not nn.Module<Tensor, Tensor> layer)
                throw new ArgumentException(
                    $"layer {i} of the model ({child.GetType().Name}) does not map one tensor to one tensor; " +
                    "wrap it in a module that does (a Pipeline also takes Boundaries.SetLayer layers, which read and write named tensors).", nameof(model));
            layers.Add(layer);
            i++;
        }
        if (layers.Count == 0) throw new ArgumentException("The model has no layers to split.", nameof(model));
        return layers;
    }

    /// <summary>
    /// The layers of a <see cref="TorchSharp.Modules.Sequential"/>, in order, for a pipeline: each maps one tensor to one
    /// tensor or is a <see cref="Boundaries.SetLayer"/>.
    /// </summary>
    internal static IReadOnlyList<nn.Module> PipelineLayers(TorchSharp.Modules.Sequential model)
    {
        var layers = model.named_children().Select(c => c.module).ToList();
        if (layers.Count == 0) throw new ArgumentException("The model has no layers to split.", nameof(model));
        var names = LayerNames(model);
        for (int i = 0; i < layers.Count; i++) Boundaries.LayerSignature.Of(layers[i], i, names[i]); // a clear error for any other kind
        return layers;
    }

    /// <summary>The names of a <see cref="TorchSharp.Modules.Sequential"/>'s layers, in order.</summary>
    public static IReadOnlyList<string> LayerNames(TorchSharp.Modules.Sequential model) =>
        model.named_children().Select(c => c.name).ToList();

    /// <summary>Number of parameter elements of each layer: the default cost for automatic balancing.</summary>
    public static IReadOnlyList<double> ParameterCounts(IReadOnlyList<nn.Module> layers) =>
        layers.Select(l => (double)l.parameters().Sum(p => p.numel())).ToList();

    /// <summary>
    /// Cuts <paramref name="layers"/> into stages of the given sizes. A stage names its layers as the model does
    /// (<paramref name="names"/>, default: the layer's index), so its parameter names are the model's.
    /// </summary>
    public static IReadOnlyList<StageModule> Split(IReadOnlyList<nn.Module> layers, IReadOnlyList<int> balance,
        IReadOnlyList<string>? names = null)
    {
        Balance.Check(balance, layers.Count);
        var stages = new List<StageModule>(balance.Count);
        int first = 0;
        for (int s = 0; s < balance.Count; s++)
        {
            var range = Enumerable.Range(first, balance[s]).ToList();
            stages.Add(new StageModule(s, first, range.Select(i => layers[i]).ToList(), range.Select(i => names?[i] ?? i.ToString()).ToList()));
            first += balance[s];
        }
        return stages;
    }
}

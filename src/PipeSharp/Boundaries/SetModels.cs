using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Boundaries;

/// <summary>Runs a model that contains <see cref="SetLayer"/>s on one device, without a pipeline.</summary>
public static class SetModels
{
    /// <summary>
    /// An <c>nn.Sequential</c> of <paramref name="layers"/>, in order, with their names: Tensor-to-Tensor modules and
    /// <see cref="SetLayer"/>s mixed (<c>nn.Sequential</c>'s own factory takes only the former).
    /// </summary>
    public static TorchSharp.Modules.Sequential Sequential(IEnumerable<(string Name, nn.IModule<Tensor, Tensor> Layer)> layers)
    {
        ArgumentNullException.ThrowIfNull(layers);
        var model = nn.Sequential();
        foreach (var (name, layer) in layers) model.append(name, layer);
        return model;
    }

    /// <summary>
    /// The plain single-device forward of <paramref name="model"/>: its layers in order on named tensors, as a pipeline
    /// runs them stage by stage. Returns the tensor the last layer writes (the model's output, what the loss takes).
    /// </summary>
    /// <param name="model">Layers that map one tensor to one tensor (on <c>x</c>) or are set layers.</param>
    /// <param name="inputs">The model's inputs by name.</param>
    /// <exception cref="ArgumentException">A layer reads a tensor that neither an earlier layer nor the inputs provide.</exception>
    public static Tensor Forward(TorchSharp.Modules.Sequential model, TensorSet inputs)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(inputs);
        var children = model.named_children().ToList();
        var layers = children.Select(c => c.module).ToList();
        var names = children.Select(c => c.name).ToList();
        BoundaryPlan.Create(layers, names, [layers.Count], inputs.Keys.ToList()); // the same checks as a pipeline's
        var signatures = layers.Select((l, i) => LayerSignature.Of(l, i, names[i])).ToList();
        var values = LayerRunner.Run(layers, signatures, inputs, i => $"layer {i} ('{names[i]}')");
        return values[signatures[^1].Writes[0]];
    }
}

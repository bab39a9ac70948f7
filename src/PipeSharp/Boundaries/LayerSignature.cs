using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Boundaries;

/// <summary>The named tensors a layer reads and writes: a set layer's declaration, or <c>x</c> to <c>x</c>.</summary>
internal sealed record LayerSignature(IReadOnlyList<string> Reads, IReadOnlyList<string> Writes)
{
    /// <summary>The signature of a layer that maps one tensor to one tensor.</summary>
    public static readonly LayerSignature Single = new([TensorSet.DefaultName], [TensorSet.DefaultName]);

    /// <summary>True for a layer that maps one tensor to one tensor.</summary>
    public bool IsSingle => ReferenceEquals(this, Single);

    /// <summary>The signature of <paramref name="layer"/>.</summary>
    /// <exception cref="ArgumentException">The layer is neither a set layer nor a Tensor-to-Tensor module.</exception>
    public static LayerSignature Of(nn.Module layer, int index, string? name = null) => layer switch
    {
        SetLayer set => new LayerSignature(set.Reads, set.Writes),
        nn.Module<Tensor, Tensor> => Single,
        _ => throw new ArgumentException(
            $"layer {index}{(name is null ? "" : $" ('{name}')")} of the model ({layer.GetType().Name}) neither maps one tensor to one tensor " +
            "nor is a SetLayer: wrap it in a module that does one of the two.", "model"),
    };
}

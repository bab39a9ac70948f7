using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Boundaries;

/// <summary>
/// Runs layers in order on named tensors: each layer gets the latest tensors of the names it reads, and its writes
/// replace earlier ones. A replaced intermediate result is disposed unless it is an input or still held under another name.
/// </summary>
internal static class LayerRunner
{
    /// <summary>Every named tensor after the last layer (the inputs included, unless replaced).</summary>
    /// <param name="layers">The layers, in order.</param>
    /// <param name="signatures">What each reads and writes.</param>
    /// <param name="inputs">The tensors the first layer may read.</param>
    /// <param name="describe">Names layer k for messages.</param>
    public static TensorSet Run(IReadOnlyList<nn.Module> layers, IReadOnlyList<LayerSignature> signatures, TensorSet inputs, Func<int, string> describe)
    {
        var values = new Dictionary<string, Tensor>(inputs, StringComparer.Ordinal);
        for (int i = 0; i < layers.Count; i++)
        {
            var signature = signatures[i];
            if (layers[i] is nn.Module<Tensor, Tensor> single)
            {
                Replace(values, inputs, TensorSet.DefaultName, single.call(Read(values, TensorSet.DefaultName, i, describe)));
                continue;
            }
            var read = new TensorSet();
            foreach (var name in signature.Reads) read.Add(name, Read(values, name, i, describe));
            var written = ((SetLayer)layers[i]).call(read);
            if (written is null || written.Count != signature.Writes.Count || !signature.Writes.All(written.ContainsKey))
                throw new InvalidOperationException(
                    $"{describe(i)} declares that it writes {string.Join(", ", signature.Writes)} but returned " +
                    $"{(written is null ? "null" : written.ToString())}: return exactly the declared tensors.");
            foreach (var name in signature.Writes) Replace(values, inputs, name, written[name]);
        }
        return new TensorSet(values);
    }

    private static Tensor Read(Dictionary<string, Tensor> values, string name, int layer, Func<int, string> describe) =>
        values.TryGetValue(name, out var t)
            ? t
            : throw new InvalidOperationException(
                $"{describe(layer)} reads '{name}', which it was not given: there are {string.Join(", ", values.Keys)}.");

    private static void Replace(Dictionary<string, Tensor> values, TensorSet inputs, string name, Tensor tensor)
    {
        if (values.TryGetValue(name, out var old) && !ReferenceEquals(old, tensor)
            && !inputs.Values.Any(t => ReferenceEquals(t, old)) && !values.Any(v => v.Key != name && ReferenceEquals(v.Value, old)))
            old.Dispose();
        values[name] = tensor;
    }
}

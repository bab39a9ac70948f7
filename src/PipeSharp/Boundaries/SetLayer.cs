using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Boundaries;

/// <summary>
/// A layer that reads several named tensors and writes several, for models whose stages pass more than one tensor
/// (hidden state and an attention mask, a U-Net's skip connection). Derive from it, declare the names in the
/// constructor and implement <c>forward</c>: it receives a set with exactly the tensors named in <see cref="Reads"/>
/// and must return a set with exactly those named in <see cref="Writes"/>. A written name replaces an earlier value
/// of that name for the layers after it.
/// </summary>
/// <remarks>
/// In a pipeline, every tensor read is the latest one of that name written by an earlier layer, or a pipeline input
/// (<c>PipelineOptions.Inputs</c>). A tensor written in one stage and read in a later one is sent
/// directly from the stage that makes it to the stage that uses it, however many stages lie between them, and its
/// gradient goes straight back; a tensor that does not require a gradient (a mask, integer ids, positions) travels
/// without autograd and gets no gradient message. Layers that map one tensor to one tensor
/// (<c>nn.Module&lt;Tensor, Tensor&gt;</c>) may be mixed freely with set layers: they read and write
/// <see cref="TensorSet.DefaultName"/>.
/// </remarks>
/// <example>
/// <code>
/// // Adds a tensor made several layers earlier (the "skip" a FunctionLayer kept) to the main value.
/// sealed class AddSkip() : SetLayer("add_skip", reads: ["x", "skip"], writes: ["x"])
/// {
///     public override TensorSet forward(TensorSet t) => TensorSet.Of(t["x"] + t["skip"]);
/// }
/// </code>
/// </example>
public abstract class SetLayer : nn.Module<TensorSet, TensorSet>, nn.IModule<Tensor, Tensor>
{
    /// <param name="name">The module's name.</param>
    /// <param name="reads">The names of the tensors <c>forward</c> takes (at least one).</param>
    /// <param name="writes">The names of the tensors <c>forward</c> returns (at least one, each once).</param>
    /// <exception cref="ArgumentException">A list is empty, or a name is empty or given twice.</exception>
    protected SetLayer(string name, IReadOnlyList<string> reads, IReadOnlyList<string> writes) : base(name)
    {
        Reads = Check(reads, nameof(reads));
        Writes = Check(writes, nameof(writes));
    }

    /// <summary>The names of the tensors this layer reads.</summary>
    public IReadOnlyList<string> Reads { get; }

    /// <summary>The names of the tensors this layer writes.</summary>
    public IReadOnlyList<string> Writes { get; }

    /// <summary>
    /// Lets a set layer be an entry of an <c>nn.Sequential</c>, the model container a pipeline splits. Called with one
    /// tensor (as <c>Sequential.forward</c> would), a layer that reads one tensor and writes one runs on it; any other
    /// refuses: run such a model with a <c>Pipeline</c> or <see cref="SetModels.Forward"/>.
    /// </summary>
    Tensor nn.IModule<Tensor, Tensor>.call(Tensor input)
    {
        if (Reads.Count != 1 || Writes.Count != 1)
            throw new NotSupportedException(
                $"set layer '{GetName()}' reads {string.Join(", ", Reads)} and writes {string.Join(", ", Writes)}: it cannot run on one tensor. " +
                "Run the model with a Pipeline, or with SetModels.Forward on one device.");
        return call(TensorSet.Of(input, Reads[0]))[Writes[0]];
    }

    private static IReadOnlyList<string> Check(IReadOnlyList<string> names, string parameter)
    {
        ArgumentNullException.ThrowIfNull(names, parameter);
        if (names.Count == 0)
            throw new ArgumentException($"{parameter} is empty: a set layer {parameter} at least one named tensor.", parameter);
        foreach (var n in names)
            if (string.IsNullOrWhiteSpace(n)) throw new ArgumentException($"{parameter} holds an empty name.", parameter);
        var twice = names.GroupBy(n => n, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (twice != null) throw new ArgumentException($"{parameter} names '{twice.Key}' twice: name each tensor once.", parameter);
        return names.ToArray();
    }
}

/// <summary>
/// A set layer without parameters of its own, made from a function: to keep a tensor for later under another name
/// (the stash of a skip connection), to make a mask from token ids, to join two tensors.
/// </summary>
/// <example>
/// <code>
/// new FunctionLayer("stash", reads: ["x"], writes: ["x", "skip"], t => new TensorSet { ["x"] = t["x"], ["skip"] = t["x"] })
/// </code>
/// </example>
public sealed class FunctionLayer : SetLayer
{
    private readonly Func<TensorSet, TensorSet> _function;

    /// <param name="name">The module's name.</param>
    /// <param name="reads">The names of the tensors <paramref name="function"/> takes.</param>
    /// <param name="writes">The names of the tensors <paramref name="function"/> returns.</param>
    /// <param name="function">Maps the read tensors to the written ones.</param>
    public FunctionLayer(string name, IReadOnlyList<string> reads, IReadOnlyList<string> writes, Func<TensorSet, TensorSet> function)
        : base(name, reads, writes)
    {
        _function = function ?? throw new ArgumentNullException(nameof(function));
    }

    /// <inheritdoc />
    public override TensorSet forward(TensorSet input) => _function(input);
}

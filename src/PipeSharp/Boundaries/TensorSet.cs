using System.Collections;
using static TorchSharp.torch;

namespace PipeSharp.Boundaries;

/// <summary>
/// A small set of named tensors: what a <see cref="SetLayer"/> reads and writes, and the input of a pipeline whose
/// model takes several tensors (e.g. token ids and a padding mask). The set does not own its tensors: disposing them
/// is the caller's business, as for any tensor.
/// </summary>
/// <example>
/// <code>
/// var batch = new TensorSet { ["ids"] = ids, ["pad"] = padding };
/// float loss = pipe.TrainStep(batch, targets);
/// </code>
/// </example>
public sealed class TensorSet : IReadOnlyDictionary<string, Tensor>
{
    /// <summary>
    /// The name of the single value of a model whose layers map one tensor to one tensor: such a layer reads and writes
    /// <c>x</c>, and a pipeline given a plain tensor as input knows it by this name.
    /// </summary>
    public const string DefaultName = "x";

    private readonly Dictionary<string, Tensor> _tensors = new(StringComparer.Ordinal);

    /// <summary>An empty set.</summary>
    public TensorSet()
    {
    }

    /// <summary>A set of the given named tensors.</summary>
    /// <exception cref="ArgumentException">A name is empty or given twice.</exception>
    public TensorSet(IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        foreach (var (name, tensor) in tensors) Add(name, tensor);
    }

    /// <summary>A set holding one tensor, under <paramref name="name"/> (default <see cref="DefaultName"/>).</summary>
    public static TensorSet Of(Tensor tensor, string name = DefaultName) => new() { { name, tensor } };

    /// <summary>The tensor named <paramref name="name"/>; setting it adds or replaces it.</summary>
    /// <exception cref="KeyNotFoundException">The set has no tensor of that name (the message lists the names it has).</exception>
    public Tensor this[string name]
    {
        get => _tensors.TryGetValue(name, out var t)
            ? t
            : throw new KeyNotFoundException($"the set has no tensor named '{name}'; it holds: {Describe()}.");
        set
        {
            CheckName(name);
            _tensors[name] = value ?? throw new ArgumentNullException(nameof(value), $"tensor '{name}' is null.");
        }
    }

    /// <summary>Adds <paramref name="tensor"/> under <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">The name is empty or already in the set.</exception>
    public void Add(string name, Tensor tensor)
    {
        CheckName(name);
        ArgumentNullException.ThrowIfNull(tensor);
        if (!_tensors.TryAdd(name, tensor))
            throw new ArgumentException($"the set already holds a tensor named '{name}': give each tensor its own name.", nameof(name));
    }

    /// <summary>Number of tensors in the set.</summary>
    public int Count => _tensors.Count;

    /// <summary>The names, in the order they were added.</summary>
    public IEnumerable<string> Keys => _tensors.Keys;

    /// <summary>The tensors, in the order they were added.</summary>
    public IEnumerable<Tensor> Values => _tensors.Values;

    /// <summary>Whether the set holds a tensor named <paramref name="name"/>.</summary>
    public bool ContainsKey(string name) => _tensors.ContainsKey(name);

    /// <summary>The tensor named <paramref name="name"/>, if the set holds one.</summary>
    public bool TryGetValue(string name, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out Tensor value) =>
        _tensors.TryGetValue(name, out value);

    /// <summary>The named tensors, in the order they were added.</summary>
    public IEnumerator<KeyValuePair<string, Tensor>> GetEnumerator() => _tensors.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <inheritdoc />
    public override string ToString() => $"TensorSet({Describe()})";

    private string Describe() =>
        _tensors.Count == 0 ? "nothing" : string.Join(", ", _tensors.Select(t => $"{t.Key} [{string.Join(",", t.Value.shape)}]"));

    private static void CheckName(string name)
    {
        if (string.IsNullOrWhiteSpace(name))
            throw new ArgumentException("a tensor's name in a set must not be empty.", nameof(name));
    }
}

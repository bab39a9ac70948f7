using System.Globalization;

namespace PipeSharp.Runtime;

/// <summary>
/// Which activations a training forward keeps for its backward (<see cref="PipelineOptions.Recomputation"/>).
/// <see cref="None"/> keeps every layer's graph. <see cref="Full"/> keeps only each stage's inputs: the forward runs
/// without building the autograd graph, and the backward (B, or I of a split backward) first runs the stage's forward
/// again with the graph, then backpropagates. <see cref="Layers"/> recomputes only the chosen layers, each on its own
/// (every transformer block, say), and keeps the graphs of the others; <see cref="Stages"/> recomputes whole stages.
/// Training gives the same parameters either way (within float32 round-off); recomputation trades one more forward of
/// the recomputed layers per micro-batch for the memory of their graphs.
/// </summary>
/// <remarks>
/// The re-run reproduces the forward's randomness (dropout) by restoring the CPU generator's state, and does not update
/// BatchNorm running statistics a second time (every buffer of a recomputed layer is put back as it was).
/// </remarks>
/// <example>
/// <code>
/// var options = new PipelineOptions { Ranks = 2, MicroBatches = 8, Recomputation = Recomputation.Full };
/// var blocks = new PipelineOptions { Ranks = 2, MicroBatches = 8, Recomputation = Recomputation.Layers(1, 2, 3, 4) };
/// </code>
/// </example>
public sealed class Recomputation : IEquatable<Recomputation>
{
    private enum Kind { None, Full, Layers, Stages }

    private readonly Kind _kind;
    private readonly int[] _indices;

    private Recomputation(Kind kind, IEnumerable<int> indices)
    {
        _kind = kind;
        _indices = indices.Distinct().Order().ToArray();
    }

    /// <summary>No recomputation: every forward keeps its whole graph until its backward (the default).</summary>
    public static Recomputation None { get; } = new(Kind.None, []);

    /// <summary>Every stage keeps only its inputs and recomputes its whole forward in its backward.</summary>
    public static Recomputation Full { get; } = new(Kind.Full, []);

    /// <summary>
    /// Recomputes the layers of the given model indices (0 for the model's first layer), each on its own: a forward keeps
    /// the input of each of them and the graphs of the other layers.
    /// </summary>
    /// <param name="layerIndices">Model layer indices, each less than the model's layer count (checked when the pipeline is made).</param>
    /// <exception cref="ArgumentException">No index, or a negative one.</exception>
    public static Recomputation Layers(params int[] layerIndices) => new(Kind.Layers, Check(layerIndices, nameof(layerIndices), "layer"));

    /// <summary>Recomputes the whole forward of the given stages (0 for the first); the others keep their graphs.</summary>
    /// <param name="stageIndices">Stage numbers, each less than the stage count (checked when the pipeline is made).</param>
    /// <exception cref="ArgumentException">No index, or a negative one.</exception>
    public static Recomputation Stages(params int[] stageIndices) => new(Kind.Stages, Check(stageIndices, nameof(stageIndices), "stage"));

    /// <summary>
    /// Reads <c>none</c>, <c>full</c>, or a comma-separated list of model layer indices (<c>1,2,3,4</c>): the values of
    /// the command line's <c>--recompute</c>.
    /// </summary>
    /// <exception cref="FormatException">The text is none of these (the message says what is accepted).</exception>
    public static Recomputation Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string t = text.Trim().ToLowerInvariant();
        if (t == "none") return None;
        if (t == "full") return Full;
        var parts = t.Split(',', StringSplitOptions.TrimEntries);
        var layers = new List<int>();
        foreach (var part in parts)
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int layer))
                throw new FormatException(
                    $"'{text}' is not a recomputation: give none, full, or model layer indices separated by commas (e.g. 1,2,3,4).");
            layers.Add(layer);
        }
        return Layers([.. layers]);
    }

    /// <summary>True if nothing is recomputed.</summary>
    public bool IsNone => _kind == Kind.None;

    /// <summary>True if layer <paramref name="layer"/> (a model index), which stage <paramref name="stage"/> holds, is recomputed.</summary>
    public bool Recomputes(int stage, int layer) => _kind switch
    {
        Kind.Full => true,
        Kind.Layers => Array.BinarySearch(_indices, layer) >= 0,
        Kind.Stages => Array.BinarySearch(_indices, stage) >= 0,
        _ => false,
    };

    /// <summary>
    /// The segments of stage <paramref name="stage"/>, whose layers are model layers <paramref name="firstLayer"/> to
    /// <paramref name="firstLayer"/> + <paramref name="layerCount"/> - 1: runs of consecutive layers, each kept or
    /// recomputed (a whole recomputed stage is one segment, a recomputed layer of <see cref="Layers"/> one of its own,
    /// consecutive kept layers one); null if the stage recomputes nothing.
    /// </summary>
    internal IReadOnlyList<StageSegment>? SegmentsOf(int stage, int firstLayer, int layerCount)
    {
        if (_kind == Kind.None || (_kind == Kind.Stages && !Recomputes(stage, firstLayer))) return null;
        if (_kind is Kind.Full or Kind.Stages) return [new StageSegment(0, layerCount, Recomputed: true)];
        var segments = new List<StageSegment>();
        int keptFrom = 0;
        for (int k = 0; k < layerCount; k++)
        {
            if (!Recomputes(stage, firstLayer + k)) continue;
            if (k > keptFrom) segments.Add(new StageSegment(keptFrom, k - keptFrom, Recomputed: false));
            segments.Add(new StageSegment(k, 1, Recomputed: true));
            keptFrom = k + 1;
        }
        if (segments.Count == 0) return null;
        if (keptFrom < layerCount) segments.Add(new StageSegment(keptFrom, layerCount - keptFrom, Recomputed: false));
        return segments;
    }

    /// <summary>Refuses indices beyond the model (before anything is built), naming the option and what fits.</summary>
    internal void Check(int layerCount, int stageCount)
    {
        if (_kind == Kind.Layers && _indices[^1] >= layerCount)
            throw new ArgumentOutOfRangeException("recomputation", _indices[^1],
                $"Recomputation.Layers names layer {_indices[^1]}, but the model has {layerCount} layers (0 to {layerCount - 1}): give indices below {layerCount}.");
        if (_kind == Kind.Stages && _indices[^1] >= stageCount)
            throw new ArgumentOutOfRangeException("recomputation", _indices[^1],
                $"Recomputation.Stages names stage {_indices[^1]}, but the pipeline has {stageCount} stages (0 to {stageCount - 1}): give indices below {stageCount}.");
    }

    /// <summary><c>none</c>, <c>full</c>, <c>layers 1,2</c> or <c>stages 0,1</c>.</summary>
    public override string ToString() => _kind switch
    {
        Kind.None => "none",
        Kind.Full => "full",
        Kind.Layers => "layers " + string.Join(",", _indices),
        _ => "stages " + string.Join(",", _indices),
    };

    /// <summary>True if both recompute the same layers of the same stages.</summary>
    public bool Equals(Recomputation? other) => other is not null && other._kind == _kind && other._indices.SequenceEqual(_indices);

    /// <inheritdoc />
    public override bool Equals(object? obj) => Equals(obj as Recomputation);

    /// <inheritdoc />
    public override int GetHashCode() => _indices.Aggregate((int)_kind, HashCode.Combine);

    private static int[] Check(int[] indices, string parameter, string what)
    {
        ArgumentNullException.ThrowIfNull(indices, parameter);
        if (indices.Length == 0)
            throw new ArgumentException($"give at least one {what} index to recompute (or use Recomputation.None).", parameter);
        if (indices.Min() < 0)
            throw new ArgumentOutOfRangeException(parameter, indices.Min(), $"{what} indices start at 0; {indices.Min()} is not one.");
        return indices;
    }
}

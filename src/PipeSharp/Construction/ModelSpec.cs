using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Construction;

/// <summary>
/// A model described rather than built: its layers in order (<see cref="LayerSpec"/>), the model seed and the
/// parameters two layers share (<see cref="TiedParameter"/>). A <c>Pipeline</c> made from a spec builds
/// in each process only the layers of the stages that process holds, so no process ever allocates another rank's
/// parameters. Layer i is built with the global torch generator seeded by <see cref="LayerSeed"/> (the model seed and
/// i mixed by SplitMix64), so the initial model is bitwise the same for any number of stages, ranks, replicas or
/// schedule, in one process or many, with no seed checkpoint.
/// </summary>
/// <remarks>
/// TorchSharp's module constructors take no generator, so a layer is built with the global generator seeded for it (under
/// a lock shared by all builds) and the caller's generator state is put back afterwards: do not draw from the global
/// generator on another thread while a spec is being built, as its state is replaced meanwhile.
/// </remarks>
public sealed class ModelSpec
{
    /// <summary>Describes a model.</summary>
    /// <param name="layers">The layers, in order (at least one; names unique, non-empty, without '.').</param>
    /// <param name="seed">The model seed: with the layer index it fixes every layer's initial weights.</param>
    /// <param name="ties">Parameters shared by two layers (none by default).</param>
    /// <exception cref="ArgumentException">A layer name is empty, repeated or holds a '.', or a tie names a layer that does not exist.</exception>
    public ModelSpec(IEnumerable<LayerSpec> layers, long seed, IEnumerable<TiedParameter>? ties = null)
    {
        ArgumentNullException.ThrowIfNull(layers);
        Layers = layers.ToArray();
        Seed = seed;
        Ties = (ties ?? []).ToArray();
        if (Layers.Count == 0) throw new ArgumentException("A model spec needs at least one layer.", nameof(layers));
        for (int i = 0; i < Layers.Count; i++)
        {
            var layer = Layers[i] ?? throw new ArgumentException($"layer {i} of the spec is null.", nameof(layers));
            if (string.IsNullOrEmpty(layer.Name) || layer.Name.Contains('.'))
                throw new ArgumentException($"layer {i} has the name '{layer.Name}': give every layer a non-empty name without '.'.", nameof(layers));
            ArgumentNullException.ThrowIfNull(layer.Build, $"layers[{i}].Build");
            if (!(layer.Cost >= 0) || double.IsInfinity(layer.Cost))
                throw new ArgumentException($"layer {i} ('{layer.Name}') has cost {layer.Cost}: give a finite cost of at least 0.", nameof(layers));
        }
        var twice = Layers.GroupBy(l => l.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (twice != null) throw new ArgumentException($"two layers are named '{twice.Key}': give every layer its own name.", nameof(layers));
        foreach (var tie in Ties)
        {
            if (tie is null || tie.OwnerLayer < 0 || tie.UserLayer >= Layers.Count || tie.OwnerLayer >= tie.UserLayer)
                throw new ArgumentException(
                    $"tie {tie} does not fit the {Layers.Count} layers: its owner layer must come before its user layer, both in 0..{Layers.Count - 1}.", nameof(ties));
            if (string.IsNullOrEmpty(tie.OwnerPath) || string.IsNullOrEmpty(tie.UserPath))
                throw new ArgumentException($"tie {tie} needs the parameter's name in both layers.", nameof(ties));
        }
    }

    /// <summary>The layers, in model order.</summary>
    public IReadOnlyList<LayerSpec> Layers { get; }

    /// <summary>The model seed.</summary>
    public long Seed { get; }

    /// <summary>The parameters shared by two layers.</summary>
    public IReadOnlyList<TiedParameter> Ties { get; }

    /// <summary>The seed layer <paramref name="layer"/> is built with: SplitMix64 of the model seed and the layer index.</summary>
    public long LayerSeed(int layer) => SeedMix.Of(Seed, layer);

    // The seed of tie t's initializer: keys below 0 are never layer indices.
    internal long TieSeed(int tie) => SeedMix.Of(Seed, -1L - tie);

    /// <summary>
    /// Builds layer <paramref name="layer"/> alone, seeded as a pipeline builds it, with its tied parameters' initial
    /// values (a tie's owner layer is not built when the tie has an initializer). The caller's RNG state is kept.
    /// </summary>
    public nn.Module BuildLayer(int layer, Device? device = null)
    {
        if (layer < 0 || layer >= Layers.Count)
            throw new ArgumentOutOfRangeException(nameof(layer), layer, $"the spec has layers 0..{Layers.Count - 1}.");
        return SpecBuilder.Build(this, layer, 1, device ?? CPU)[0];
    }

    /// <summary>
    /// Builds the whole model as a <see cref="TorchSharp.Modules.Sequential"/> of its named layers, tied parameters
    /// shared (one parameter object), every layer seeded as a pipeline builds it: the model a pipeline made from this
    /// spec starts from, for single-device training or for a model that fits one process. The caller's RNG state is kept.
    /// </summary>
    public TorchSharp.Modules.Sequential Build(Device? device = null)
    {
        var layers = SpecBuilder.Build(this, 0, Layers.Count, device ?? CPU);
        var named = new List<(string, nn.Module<Tensor, Tensor>)>();
        for (int i = 0; i < layers.Count; i++)
        {
            if (layers[i] is not nn.Module<Tensor, Tensor> single)
                throw new NotSupportedException(
                    $"layer {i} ('{Layers[i].Name}') is a {layers[i].GetType().Name}, which does not map one tensor to one tensor: a Sequential cannot hold it.");
            named.Add((Layers[i].Name, single));
        }
        return nn.Sequential(named);
    }
}

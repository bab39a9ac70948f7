using PipeSharp.Boundaries;
using PipeSharp.Native;
using PipeSharp.Partitioning;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>A boundary value a stage received and made a leaf of its graph; its gradient goes back to stage <paramref name="From"/>.</summary>
internal sealed record ReceivedValue(string Name, int Value, int From, Tensor Leaf);

/// <summary>
/// A tensor from which a stage's backward starts: a boundary value it sent (whose gradients come back from
/// <paramref name="Consumers"/>) or, on the last stage, the weighted loss (no consumers, no gradient to wait for).
/// </summary>
internal sealed record SentValue(string Name, int Value, IReadOnlyList<int> Consumers, Tensor Tensor);

/// <summary>What a forward keeps for its backward: the received values that need a gradient, the values sent that
/// carry one (or the weighted loss on the last stage) and, when the backward is split into I and W, the outputs of the
/// stage's parameterised layers; for a stage that recomputes, what each of its segments keeps instead of one graph.</summary>
internal sealed record SavedForward(IReadOnlyList<ReceivedValue> Inputs, IReadOnlyList<SentValue> Outputs, IReadOnlyList<LayerOutput>? LayerOutputs,
    IReadOnlyList<SavedSegment>? Segments = null);

/// <summary>The output of one parameterised layer during a forward, and that layer's own parameters.</summary>
internal sealed record LayerOutput(Tensor Output, IReadOnlyList<Tensor> Parameters);

/// <summary>What an input-gradient action leaves for the matching weight-gradient action: each layer output with
/// its gradient (and, for parameters no layer output covers, the stage's outputs with their gradients).</summary>
internal sealed record DeferredWeightGrad(IReadOnlyList<(LayerOutput Layer, Tensor Grad)> Layers, IReadOnlyList<Tensor> Outputs,
    IReadOnlyList<Tensor>? OutputGrads, IReadOnlyList<Tensor> Uncovered);

/// <summary>
/// A stage as the runtime sees it: its module on its device, its optimizer, and the tensors its forwards keep for
/// their backwards. Layers with parameters of their own get a forward hook so that, for a split backward, their
/// outputs are kept and the weight gradient can be computed later from (layer output, its gradient) alone.
/// </summary>
internal sealed class StageRuntime : IDisposable
{
    private readonly Dictionary<int, SavedForward> _saved = new();
    private readonly Dictionary<int, DeferredWeightGrad> _deferred = new();
    private readonly List<Action> _removeHooks = new();
    private readonly TorchSharp.Modules.Parameter[] _parameters;
    private List<LayerOutput>? _capture;
    private (IReadOnlyList<Tensor>[] Layers, Tensor[] Parameters)? _uncovered;
    private (nn.Module Layer, LayerSignature Signature, string Name)[]? _layers;

    public StageRuntime(StageModule module, Device device, int rank, optim.Optimizer optimizer, optim.lr_scheduler.LRScheduler? scheduler)
    {
        Module = module;
        Device = device;
        Rank = rank;
        Optimizer = optimizer;
        Scheduler = scheduler;
        _parameters = module.parameters().ToArray();
        // A parameter that several layers of this stage use (a tie within the stage) is left to the stage-output
        // path in the weight-gradient action: a per-layer backward from a later use would reach it again through the
        // earlier use and count that contribution twice.
        var layers = module.modules().OfType<nn.Module<Tensor, Tensor>>()
            .Select(layer => (Layer: layer, Own: layer.named_parameters(recurse: false).Select(p => (Tensor)p.parameter).ToArray()))
            .Where(l => l.Own.Length > 0).ToList();
        var uses = layers.SelectMany(l => l.Own.Select(ParameterIdentity.Key).Distinct()).GroupBy(k => k).ToDictionary(g => g.Key, g => g.Count());
        foreach (var (layer, all) in layers)
        {
            var own = all.Where(p => uses[ParameterIdentity.Key(p)] == 1).ToArray();
            if (own.Length == 0) continue;
            var hook = layer.register_forward_hook((_, _, output) =>
            {
                if (_capture == null) return null!; // null: keep the layer's output as it is
                // Keep this handle and let an alias flow on: containers such as Sequential dispose the
                // intermediate results they pass along, and the gradient must be taken at this very tensor.
                _capture.Add(new LayerOutput(output, own));
                return output.alias();
            });
            _removeHooks.Add(() => hook.remove());
        }
    }

    public StageModule Module { get; }
    public Device Device { get; }
    public int Rank { get; }
    public optim.Optimizer Optimizer { get; }
    public optim.lr_scheduler.LRScheduler? Scheduler { get; }

    /// <summary>The stage's segments when it recomputes activations (<see cref="Recomputation"/>); null when it keeps every graph.</summary>
    public IReadOnlyList<StageSegment>? Segments { get; init; }

    /// <summary>
    /// For a recomputing stage: by segment and by which of its inputs need a gradient, the names of the tensors the
    /// segment makes that carry one (learnt once from a run with the graph, as a run without it cannot tell).
    /// </summary>
    public Dictionary<string, HashSet<string>> GradientNames { get; } = new(StringComparer.Ordinal);

    /// <summary>Runs the stage, keeping the outputs of its parameterised layers if <paramref name="captureLayers"/>.</summary>
    public (TensorSet Output, IReadOnlyList<LayerOutput>? Layers) Forward(TensorSet input, bool captureLayers) =>
        Capture(() => Module.Run(input), captureLayers);

    /// <summary>Runs the layers of <paramref name="segment"/> on <paramref name="input"/>, capturing as <see cref="Forward"/> does.</summary>
    public (TensorSet Output, IReadOnlyList<LayerOutput>? Layers) Run(StageSegment segment, TensorSet input, bool captureLayers)
    {
        var slice = LayersOf(segment);
        return Capture(() => LayerRunner.Run(slice.Select(l => l.Layer).ToList(), slice.Select(l => l.Signature).ToList(), input,
            k => $"layer {Module.FirstLayer + segment.First + k} ('{slice[k].Name}') of stage {Module.Index}"), captureLayers);
    }

    /// <summary>The modules of the layers of <paramref name="segment"/>, the layers and everything inside them.</summary>
    public IEnumerable<nn.Module> ModulesOf(StageSegment segment) => LayersOf(segment).SelectMany(l => l.Layer.modules());

    private (nn.Module Layer, LayerSignature Signature, string Name)[] LayersOf(StageSegment segment)
    {
        _layers ??= Module.named_children().Select((c, k) => (c.module, LayerSignature.Of(c.module, Module.FirstLayer + k, c.name), c.name)).ToArray();
        return _layers[segment.First..(segment.First + segment.Count)];
    }

    private (TensorSet Output, IReadOnlyList<LayerOutput>? Layers) Capture(Func<TensorSet> run, bool captureLayers)
    {
        if (!captureLayers) return (run(), null);
        _capture = new List<LayerOutput>();
        try
        {
            var output = run();
            return (output, _capture);
        }
        finally
        {
            _capture = null;
        }
    }

    /// <summary>The stage's parameters that no captured layer output leads to directly.</summary>
    public IReadOnlyList<Tensor> Uncovered(IReadOnlyList<LayerOutput> layers)
    {
        // Every forward captures the same layers (each hook hands out its own parameter list), so the parameters
        // they leave uncovered are worked out once: the identity keys cost about 0.1 ms per input-gradient action.
        var sets = layers.Select(l => l.Parameters).ToArray();
        if (_uncovered is not { } known || !known.Layers.SequenceEqual(sets, ReferenceEqualityComparer.Instance))
        {
            var covered = sets.SelectMany(p => p).Select(ParameterIdentity.Key).ToHashSet();
            _uncovered = known = (sets, _parameters.Where(p => !covered.Contains(ParameterIdentity.Key(p))).Cast<Tensor>().ToArray());
        }
        return known.Parameters.Where(p => p.requires_grad).ToList();
    }

    /// <summary>Keeps what micro-batch <paramref name="microBatch"/>'s backward needs (taken out of every dispose scope).</summary>
    public void Save(int microBatch, SavedForward saved)
    {
        foreach (var v in saved.Inputs) v.Leaf.DetachFromDisposeScope();
        foreach (var v in saved.Outputs) v.Tensor.DetachFromDisposeScope();
        if (saved.LayerOutputs != null)
            foreach (var l in saved.LayerOutputs) l.Output.DetachFromDisposeScope();
        foreach (var t in saved.Segments?.SelectMany(g => g.Tensors()) ?? []) t.DetachFromDisposeScope();
        _saved.Add(microBatch, saved);
    }

    /// <summary>Hands back what <see cref="Save"/> kept; the caller disposes it.</summary>
    public SavedForward Take(int microBatch) =>
        _saved.Remove(microBatch, out var s)
            ? s
            : throw new InvalidOperationException($"stage {Module.Index} has no saved forward of micro-batch {microBatch}.");

    /// <summary>Keeps what the weight gradient of <paramref name="microBatch"/> needs.</summary>
    public void Defer(int microBatch, DeferredWeightGrad deferred)
    {
        foreach (var (layer, grad) in deferred.Layers)
        {
            layer.Output.DetachFromDisposeScope();
            grad.DetachFromDisposeScope();
        }
        foreach (var t in deferred.Outputs) t.DetachFromDisposeScope();
        if (deferred.OutputGrads != null) foreach (var t in deferred.OutputGrads) t.DetachFromDisposeScope();
        _deferred.Add(microBatch, deferred);
    }

    /// <summary>Hands back what <see cref="Defer"/> kept; the caller disposes it.</summary>
    public DeferredWeightGrad TakeDeferred(int microBatch) =>
        _deferred.Remove(microBatch, out var d)
            ? d
            : throw new InvalidOperationException($"stage {Module.Index} has no input gradient of micro-batch {microBatch} to finish.");

    /// <summary>Disposes whatever a failed step left saved.</summary>
    public void DropSaved()
    {
        foreach (var s in _saved.Values) Dispose(s);
        foreach (var d in _deferred.Values) Dispose(d);
        _saved.Clear();
        _deferred.Clear();
    }

    public static void Dispose(SavedForward s)
    {
        foreach (var v in s.Inputs) v.Leaf.Dispose();
        foreach (var v in s.Outputs) v.Tensor.Dispose();
        if (s.LayerOutputs != null)
            foreach (var l in s.LayerOutputs) l.Output.Dispose();
        foreach (var t in s.Segments?.SelectMany(g => g.Tensors()) ?? []) t.Dispose();
    }

    public static void Dispose(DeferredWeightGrad d)
    {
        foreach (var (layer, grad) in d.Layers)
        {
            layer.Output.Dispose();
            grad.Dispose();
        }
        foreach (var t in d.Outputs) t.Dispose();
        if (d.OutputGrads != null) foreach (var t in d.OutputGrads) t.Dispose();
    }

    public void Dispose()
    {
        DropSaved();
        foreach (var remove in _removeHooks) remove();
        Optimizer.Dispose();
    }
}

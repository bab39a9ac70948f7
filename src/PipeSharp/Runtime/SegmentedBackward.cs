using PipeSharp.Boundaries;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// The backward of a stage that recomputes activations: its segments are walked last first. A recomputed segment runs
/// its forward again from the inputs it kept, with the graph (the generator and buffers as in <see cref="RerunGuard"/>);
/// a kept one has its graph from the forward. From the gradients of the segment's outputs (for the last segment those
/// the stage received, or its loss), one pass gives the gradients of its inputs, which are the next segment's output
/// gradients. A full backward (B) accumulates the parameter gradients in that pass and frees each segment's graph before
/// recomputing the previous one; an input-gradient action (I) skips the weights and leaves each segment's layer outputs
/// with their gradients (and its outputs, for parameters no layer output covers) to the weight-gradient action (W),
/// which then runs exactly as for a stage that keeps its graph.
/// </summary>
internal static class SegmentedBackward
{
    /// <summary>Backpropagates micro-batch <paramref name="microBatch"/> through every segment.</summary>
    /// <param name="stage">The stage.</param>
    /// <param name="microBatch">The micro-batch (where an I leaves what its W needs).</param>
    /// <param name="saved">What the micro-batch's forward kept.</param>
    /// <param name="outputGrads">The gradients of the saved outputs, in their order (null on the last stage).</param>
    /// <param name="loss">On the last stage: the weighted loss of the stage's tensors (null elsewhere).</param>
    /// <param name="split">True for I: input gradients only, the weight gradients deferred to W.</param>
    /// <returns>The gradient of each of the stage's inputs that got one, by name.</returns>
    public static Dictionary<string, Tensor> Run(StageRuntime stage, int microBatch, SavedForward saved, IReadOnlyList<Tensor>? outputGrads,
        Func<TensorSet, Tensor>? loss, bool split)
    {
        var segments = saved.Segments!;
        Dictionary<string, Tensor>? after = null;
        var deferred = new List<(LayerOutput, Tensor)>();
        var captured = new List<LayerOutput>();
        var roots = new List<Tensor>();
        var rootGrads = new List<Tensor>();
        for (int k = segments.Count - 1; k >= 0; k--)
        {
            var segment = segments[k];
            using var scope = torch.NewDisposeScope();
            var (outputs, layers) = segment.Segment.Recomputed ? Rerun(stage, segment, split) : (segment.Outputs!, segment.Layers);
            var (from, grads) = after is null ? Tail(saved, outputs, outputGrads, loss) : Roots(outputs, after);
            var leaves = segment.Inputs.Where(p => p.Value.requires_grad).ToList();
            var found = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            if (!split)
            {
                if (from.Count > 0) torch.autograd.backward(from, grads);
                foreach (var (name, leaf) in leaves)
                    if (leaf.grad is { IsInvalid: false } g) found[name] = g;
            }
            else
            {
                var wrt = leaves.Select(p => p.Value).Concat(layers?.Select(l => l.Output) ?? []).ToList();
                var g = wrt.Count == 0 || from.Count == 0
                    ? new Tensor?[wrt.Count]
                    : torch.autograd.grad(from, wrt, grads, retain_graph: true, allow_unused: true).Select(t => (Tensor?)t).ToArray();
                for (int j = 0; j < leaves.Count; j++)
                    if (g[j] is { IsInvalid: false } lg) found[leaves[j].Key] = lg;
                var keep = new List<Tensor>();
                for (int j = 0; j < (layers?.Count ?? 0); j++)
                {
                    var layer = layers![j];
                    captured.Add(layer);
                    if (g[leaves.Count + j] is { IsInvalid: false } lg) { deferred.Add((layer, lg)); keep.Add(layer.Output); keep.Add(lg); }
                    else layer.Output.Dispose(); // this layer's output does not reach the segment's outputs
                }
                // The segment's outputs and their gradients, for the parameters no layer output leads to (W).
                var aliases = from.Select(r => r.alias()).ToList();
                var gradAliases = grads.Select(t => t.alias()).ToList();
                roots.AddRange(aliases);
                rootGrads.AddRange(gradAliases);
                scope.MoveToOuter(keep.Concat(aliases).Concat(gradAliases));
            }
            scope.MoveToOuter(found.Values);
            after = found;
        }
        if (split) Defer(stage, microBatch, deferred, captured, roots, rootGrads);
        return after ?? new Dictionary<string, Tensor>();
    }

    // What the weight-gradient action needs, as for a stage that keeps its graph.
    private static void Defer(StageRuntime stage, int microBatch, List<(LayerOutput, Tensor)> deferred, List<LayerOutput> captured,
        List<Tensor> roots, List<Tensor> rootGrads)
    {
        var uncovered = stage.Uncovered(captured);
        if (uncovered.Count > 0 && roots.Count > 0)
        {
            stage.Defer(microBatch, new DeferredWeightGrad(deferred, roots, rootGrads, uncovered));
            return;
        }
        foreach (var t in roots.Concat(rootGrads)) t.Dispose();
        stage.Defer(microBatch, new DeferredWeightGrad(deferred, [], null, []));
    }

    // The segment's forward again, with the graph, from the inputs it kept; the generator and buffers as the first run had them.
    private static (TensorSet, IReadOnlyList<LayerOutput>?) Rerun(StageRuntime stage, SavedSegment segment, bool capture)
    {
        using var guard = new RerunGuard(segment.RandomState, stage.ModulesOf(segment.Segment));
        return stage.Run(segment.Segment, segment.Inputs, capture);
    }

    // Where the last segment's backward starts: the loss on the last stage, else the stage's sent outputs with the
    // gradients received for them (an output that carries no gradient after all has nothing to pass on).
    private static (List<Tensor>, List<Tensor>) Tail(SavedForward saved, TensorSet outputs, IReadOnlyList<Tensor>? outputGrads, Func<TensorSet, Tensor>? loss)
    {
        if (loss is not null)
        {
            var weighted = saved.Segments![^1].Segment.Recomputed ? loss(outputs) : saved.Outputs[0].Tensor;
            return ([weighted], [torch.ones_like(weighted)]);
        }
        var from = new List<Tensor>();
        var grads = new List<Tensor>();
        for (int j = 0; j < saved.Outputs.Count; j++)
        {
            var root = outputs[saved.Outputs[j].Name];
            if (!root.requires_grad) continue;
            from.Add(root);
            grads.Add(outputGrads![j]);
        }
        return (from, grads);
    }

    // The outputs of a segment that the next one's gradients reach, with those gradients.
    private static (List<Tensor>, List<Tensor>) Roots(TensorSet outputs, Dictionary<string, Tensor> after)
    {
        var from = new List<Tensor>();
        var grads = new List<Tensor>();
        foreach (var (name, grad) in after)
        {
            if (!outputs.TryGetValue(name, out var root) || !root.requires_grad) continue;
            from.Add(root);
            grads.Add(grad);
        }
        return (from, grads);
    }
}

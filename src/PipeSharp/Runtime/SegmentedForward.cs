using PipeSharp.Boundaries;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// The forward of a stage that recomputes activations: its segments run in order, a kept one with its graph (capturing
/// its layer outputs for a split backward), a recomputed one without a graph, keeping only its inputs and the generator
/// state it started from. Between segments every tensor becomes a fresh leaf (with a gradient where the next segment
/// will need one), so each segment's graph ends at its own leaves and the backward can walk the segments in reverse.
/// </summary>
internal static class SegmentedForward
{
    /// <summary>Runs the segments of <paramref name="stage"/> on <paramref name="inputs"/> (its received leaves and pipeline inputs).</summary>
    /// <param name="stage">The stage (with <see cref="StageRuntime.Segments"/>).</param>
    /// <param name="inputs">Its inputs, as the action received them.</param>
    /// <param name="split">Capture the layer outputs of kept segments (the backward is split into I and W).</param>
    /// <param name="leafOutputs">
    /// After a recomputed last segment, make the stage's tensors leaves that carry a gradient where a run with the graph
    /// would, so they are sent with that flag (the stage sends them on; the last stage computes its loss from them without a graph).
    /// </param>
    /// <returns>The stage's tensors after its last layer, and what each segment keeps.</returns>
    public static (TensorSet Output, List<SavedSegment> Saved) Run(StageRuntime stage, TensorSet inputs, bool split, bool leafOutputs)
    {
        var segments = stage.Segments!;
        var saved = new List<SavedSegment>();
        // The first segment starts from the stage's own leaves (their gradients go back to the stages that sent them).
        var start = new TensorSet(inputs.Select(p => KeyValuePair.Create(p.Key, p.Value.requires_grad ? p.Value : p.Value.detach())));
        for (int k = 0; k < segments.Count; k++)
        {
            var segment = segments[k];
            TensorSet output;
            HashSet<string> gradient;
            if (!segment.Recomputed)
            {
                var (values, layers) = stage.Run(segment, start, split);
                saved.Add(new SavedSegment(segment, start, values, layers, null));
                output = values;
                gradient = values.Where(p => p.Value.requires_grad).Select(p => p.Key).ToHashSet();
            }
            else
            {
                gradient = GradientNames(stage, k, start);
                var state = torch.get_rng_state();
                using (var scope = torch.NewDisposeScope())
                using (torch.no_grad())
                {
                    output = stage.Run(segment, start, captureLayers: false).Output;
                    scope.MoveToOuter(output.Values); // the rest of the run (no graph holds it) is freed here
                }
                saved.Add(new SavedSegment(segment, start, null, null, state));
            }
            bool last = k == segments.Count - 1;
            if (last && !(segment.Recomputed && leafOutputs)) return (output, saved);
            start = Leaves(output, gradient);
        }
        return (start, saved);
    }

    // Fresh handles of every tensor of the set, without graph: a leaf that requires a gradient where one is wanted.
    private static TensorSet Leaves(TensorSet values, HashSet<string> gradient) =>
        new(values.Select(p => KeyValuePair.Create(p.Key, gradient.Contains(p.Key) ? p.Value.detach().requires_grad_(true) : p.Value.detach())));

    // Which tensors segment k makes that carry a gradient, given which of its inputs do: a run without the graph cannot
    // tell (nothing it makes requires a gradient), so one run with the graph finds out, the first time, and leaves no
    // trace (the generator and the buffers are put back; its graph is freed at once).
    private static HashSet<string> GradientNames(StageRuntime stage, int k, TensorSet start)
    {
        string key = k + ":" + string.Join(",", start.Select(p => p.Key + (p.Value.requires_grad ? "+" : "-")));
        if (stage.GradientNames.TryGetValue(key, out var known)) return known;
        var segment = stage.Segments![k];
        using var scope = torch.NewDisposeScope();
        using var guard = new RerunGuard(null, stage.ModulesOf(segment));
        var output = stage.Run(segment, start, captureLayers: false).Output;
        var names = output.Where(p => p.Value.requires_grad).Select(p => p.Key).ToHashSet();
        stage.GradientNames[key] = names;
        return names;
    }
}

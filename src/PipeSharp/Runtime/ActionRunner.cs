using PipeSharp.Boundaries;
using PipeSharp.Randomness;
using PipeSharp.Schedules;
using PipeSharp.Tracing;
using PipeSharp.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Runs one action of any schedule. What an action needs and where its results go follow from the stage number and
/// the boundary plan alone: a stage takes its pipeline inputs from the micro-batch and every other tensor it reads from
/// the stage that makes it; the last stage computes the weighted loss, others send each tensor a later stage reads to
/// that stage; a backward (B, or I) sends the gradient of each received tensor that needs one back to its maker.
/// Nothing here knows which schedule runs.
/// </summary>
internal sealed class ActionRunner(int replica, IReadOnlyList<StageRuntime?> stages, ITransport transport, Func<Tensor, Tensor, Tensor>? loss,
    BoundaryPlan boundaries)
{
    private readonly BoundaryMessages _messages = new(replica, stages, transport);

    private int Last => stages.Count - 1;

    /// <summary>Runs <paramref name="action"/>; returns the timestamp at which its inputs had arrived and compute began.</summary>
    public long Run(PipelineAction action, StepContext step)
    {
        switch (action.Kind)
        {
            case ActionKind.Forward:
                long started = Forward(action.Stage, action.MicroBatch, step);
                if (step.ActivationBytes is { } kept && step.HeapBefore![action.Stage] is { } b && NativeHeap.BytesInUse() is { } a)
                    kept[action.Stage] = Math.Max(0, a - b); // after the action's scope freed its temporaries: what it keeps
                if (step.KeptForMeasurement?[action.Stage] is { } results)
                    foreach (var t in results) t.Dispose();
                step.Measured?[action.Stage].Set();
                return started;
            case ActionKind.Backward: return Backward(action.Stage, action.MicroBatch, step);
            case ActionKind.InputGrad: return InputGrad(action.Stage, action.MicroBatch, step);
            case ActionKind.WeightGrad: return WeightGrad(action.Stage, action.MicroBatch);
            default: throw new NotSupportedException($"action kind {action.Kind} is not supported by this runtime.");
        }
    }

    private long Forward(int s, int i, StepContext step)
    {
        var stage = stages[s]!;
        var plan = boundaries.Stages[s];
        var data = step.Replicas[replica]!;
        bool training = step.Training;
        using var scope = torch.NewDisposeScope();
        bool measure = step.ActivationBytes is not null; // keep the graph as training would, to measure what it holds
        var (inputs, leaves) = _messages.ReceiveInputs(plan, i, data.Inputs[i], step);
        long start = BoundaryMessages.Now();
        using var gradMode = training || measure ? null : torch.no_grad();
        // One heap, several threads: the previous stage's forward must have freed its temporaries before this one is measured.
        if (measure && s > 0 && stages[s - 1] != null) step.Measured![s - 1].Wait(step.Cancellation);
        long? before = measure ? NativeHeap.BytesInUse() : null;
        if (measure) step.HeapBefore![s] = before;
        (TensorSet Values, IReadOnlyList<LayerOutput>? Layers, List<SavedSegment>? Segments) forward;
        using (DropoutContext.Enter(step.DropoutSeed, step.TrainingStep, data.FirstSamples[i])) // masks keyed by sample, not by micro-batch
            forward = RunStage(stage, inputs, graph: training || measure, split: training && step.IsSplit(s, i), leafOutputs: training && s != Last,
                segmented: !step.WithoutRecomputation);
        var (values, layers, segments) = forward;
        if (measure && before is { } b && NativeHeap.BytesInUse() is { } a) step.ForwardPeakBytes![s] = Math.Max(0, a - b);
        if (measure && !training) step.KeptForMeasurement![s] = KeptByForward(values, segments);
        step.Peak?.Sample();
        if (measure && step.OutputBytes is { } sentBytes) sentBytes[s] = plan.Outputs.Sum(o => values[o.Name].numel() * values[o.Name].element_size());

        if (s == Last)
        {
            var output = values[plan.Result!];
            if (!training)
            {
                if (step.Evaluation is { } evaluation) evaluation.Score(replica, data, i, output, stage.Device, loss!);
                else data.Outputs[i] = output.detach().DetachFromDisposeScope();
                return start;
            }
            var target = data.Targets![i].to(stage.Device);
            using var weight = data.LossWeights[i].ToScalar(); // explicit: see Native/CollectionPause
            var weighted = loss!(output, target).mul(weight);
            data.AddLoss(weighted.item<float>());
            stage.Save(i, new SavedForward(leaves, [new SentValue("loss", -1, [], weighted)], layers, segments));
        }
        else
        {
            var sent = _messages.SendOutputs(plan, i, values, training, step);
            if (training) stage.Save(i, new SavedForward(leaves, sent, layers, segments));
        }
        return start;
    }

    // The stage's layers on its inputs: all at once, or segment by segment if it recomputes (when the graph is kept).
    private static (TensorSet, IReadOnlyList<LayerOutput>?, List<SavedSegment>?) RunStage(StageRuntime stage, TensorSet inputs, bool graph, bool split, bool leafOutputs,
        bool segmented = true)
    {
        if (stage.Segments != null && graph && segmented)
        {
            var (values, segments) = SegmentedForward.Run(stage, inputs, split, leafOutputs);
            return (values, null, segments);
        }
        var (output, layers) = stage.Forward(inputs, captureLayers: split);
        return (output, layers, null);
    }

    // What a measured forward keeps for a backward, held past the action's scope until the heap is read: its results
    // (which hold its graph) and, with recomputation, what each segment saved (its inputs and generator state).
    private static List<Tensor> KeptByForward(TensorSet values, List<SavedSegment>? segments)
    {
        var kept = values.Values.ToList();
        foreach (var segment in segments ?? [])
        {
            kept.AddRange(segment.Inputs.Values);
            if (segment.Outputs != null) kept.AddRange(segment.Outputs.Values);
            if (segment.RandomState is { } state) kept.Add(state);
        }
        return kept.Select(t => t.alias().DetachFromDisposeScope()).ToList();
    }

    // A backward that runs recomputed segments again: under the forward's dropout key, so the masks are the forward's.
    private T Rerun<T>(int i, StepContext step, Func<T> backward)
    {
        using (DropoutContext.Enter(step.DropoutSeed, step.TrainingStep, step.Replicas[replica]!.FirstSamples[i]))
            return backward();
    }

    // Full backward: input and weight gradients in one pass.
    private long Backward(int s, int i, StepContext step)
    {
        var stage = stages[s]!;
        using var scope = torch.NewDisposeScope();
        var saved = stage.Take(i);
        Attach(scope, saved);
        var grads = _messages.ReceiveOutputGrads(s, i, saved.Outputs, step);
        long start = BoundaryMessages.Now();
        if (saved.Segments != null)
        {
            var found = Rerun(i, step, () => SegmentedBackward.Run(stage, i, saved, grads, LossOf(s, i, step), split: false));
            _messages.SendInputGrads(s, i, saved.Inputs, saved.Inputs.Select(v => found.GetValueOrDefault(v.Name)).ToList(), step);
            return start;
        }
        if (saved.Outputs.Count > 0) torch.autograd.backward(saved.Outputs.Select(o => o.Tensor).ToList(), grads);
        step.Peak?.Sample();
        _messages.SendInputGrads(s, i, saved.Inputs, saved.Inputs.Select(v => v.Leaf.grad).ToList(), step);
        return start;
    }

    // Input gradient only: the gradients of the received tensors and of every captured layer output, from one pass that
    // skips all weight gradients. The layer outputs and their gradients are kept for the weight-gradient action.
    private long InputGrad(int s, int i, StepContext step)
    {
        var stage = stages[s]!;
        using var scope = torch.NewDisposeScope();
        var saved = stage.Take(i);
        foreach (var v in saved.Inputs) scope.Attach(v.Leaf);
        foreach (var v in saved.Outputs) scope.Attach(v.Tensor);
        AttachSegments(scope, saved);
        var grads = _messages.ReceiveOutputGrads(s, i, saved.Outputs, step);
        long start = BoundaryMessages.Now();
        if (saved.Segments != null)
        {
            var inputGrads = Rerun(i, step, () => SegmentedBackward.Run(stage, i, saved, grads, LossOf(s, i, step), split: true));
            _messages.SendInputGrads(s, i, saved.Inputs, saved.Inputs.Select(v => inputGrads.GetValueOrDefault(v.Name)).ToList(), step);
            return start;
        }
        var layers = saved.LayerOutputs ?? [];
        var roots = saved.Outputs.Select(o => o.Tensor).ToList();

        var wrt = saved.Inputs.Select(v => v.Leaf).Concat(layers.Select(l => l.Output)).ToList();
        var found = wrt.Count == 0 || roots.Count == 0
            ? new Tensor?[wrt.Count]
            : torch.autograd.grad(roots, wrt, grads, retain_graph: true, allow_unused: true).Select(g => (Tensor?)g).ToArray();
        _messages.SendInputGrads(s, i, saved.Inputs, found.Take(saved.Inputs.Count).ToList(), step);

        int offset = saved.Inputs.Count;
        var deferred = new List<(LayerOutput, Tensor)>();
        for (int k = 0; k < layers.Count; k++)
        {
            var g = found[offset + k];
            if (g is null || g.IsInvalid) { layers[k].Output.Dispose(); continue; } // this layer's output does not reach the stage outputs
            deferred.Add((layers[k], g));
        }
        var uncovered = stage.Uncovered(layers);
        if (uncovered.Count > 0 && roots.Count > 0)
        {
            // Parameters no captured layer leads to: their gradient comes from the stage outputs in the W action.
            stage.Defer(i, new DeferredWeightGrad(deferred, roots.Select(r => r.alias()).ToList(), grads?.Select(g => g.alias()).ToList(), uncovered));
        }
        else
        {
            stage.Defer(i, new DeferredWeightGrad(deferred, [], null, []));
        }
        return start;
    }

    // Weight gradient: for each captured layer, backpropagate its output gradient to that layer's own parameters.
    private long WeightGrad(int s, int i)
    {
        long start = BoundaryMessages.Now();
        var stage = stages[s]!;
        using var scope = torch.NewDisposeScope();
        var deferred = stage.TakeDeferred(i);
        try
        {
            foreach (var (layer, grad) in deferred.Layers)
            {
                var parameters = layer.Parameters.Where(p => p.requires_grad).ToList();
                if (parameters.Count > 0)
                    torch.autograd.backward([layer.Output], [grad], retain_graph: true, inputs: parameters);
            }
            if (deferred.Outputs.Count > 0 && deferred.Uncovered.Count > 0)
                torch.autograd.backward(deferred.Outputs.ToList(), deferred.OutputGrads?.ToList(), retain_graph: true, inputs: deferred.Uncovered.ToList());
        }
        finally
        {
            StageRuntime.Dispose(deferred);
        }
        return start;
    }

    private static void Attach(DisposeScope scope, SavedForward saved)
    {
        foreach (var v in saved.Inputs) scope.Attach(v.Leaf);
        foreach (var v in saved.Outputs) scope.Attach(v.Tensor);
        if (saved.LayerOutputs != null)
            foreach (var l in saved.LayerOutputs) scope.Attach(l.Output);
        AttachSegments(scope, saved);
        foreach (var l in saved.Segments?.SelectMany(g => g.Layers ?? []) ?? []) scope.Attach(l.Output);
    }

    // A recomputing stage's segments: what they started and ended with, and their generator states. (Their captured layer
    // outputs go to the weight-gradient action, or are disposed, in an input-gradient action.)
    private static void AttachSegments(DisposeScope scope, SavedForward saved)
    {
        foreach (var g in saved.Segments ?? [])
        {
            foreach (var t in g.Inputs.Values.Concat(g.Outputs?.Values ?? [])) scope.Attach(t);
            if (g.RandomState is not null) scope.Attach(g.RandomState);
        }
    }

    // The last stage's weighted loss of micro-batch i from the stage's tensors, as its forward computes it (for a
    // recomputed last segment); null on other stages.
    private Func<TensorSet, Tensor>? LossOf(int s, int i, StepContext step)
    {
        if (s != Last) return null;
        var data = step.Replicas[replica]!;
        var result = boundaries.Stages[s].Result!;
        var device = stages[s]!.Device;
        return values =>
        {
            using var weight = data.LossWeights[i].ToScalar(); // explicit: see Native/CollectionPause
            return loss!(values[result], data.Targets![i].to(device)).mul(weight);
        };
    }
}

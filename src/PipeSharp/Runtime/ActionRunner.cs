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
            case ActionKind.Forward: return Forward(action.Stage, action.MicroBatch, step);
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
        long? before = measure ? NativeHeap.BytesInUse() : null;
        (TensorSet values, IReadOnlyList<LayerOutput>? layers) forward;
        using (DropoutContext.Enter(step.DropoutSeed, step.TrainingStep, data.FirstSamples[i])) // masks keyed by sample, not by micro-batch
            forward = stage.Forward(inputs, captureLayers: training && step.IsSplit(s, i));
        var (values, layers) = forward;
        if (measure && before is { } b && NativeHeap.BytesInUse() is { } a) step.ActivationBytes![s] = Math.Max(0, a - b);

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
            var weighted = loss!(output, target).mul(data.LossWeights[i]);
            data.AddLoss(weighted.item<float>());
            stage.Save(i, new SavedForward(leaves, [new SentValue("loss", -1, [], weighted)], layers));
        }
        else
        {
            var sent = _messages.SendOutputs(plan, i, values, training, step);
            if (training) stage.Save(i, new SavedForward(leaves, sent, layers));
        }
        return start;
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
        if (saved.Outputs.Count > 0) torch.autograd.backward(saved.Outputs.Select(o => o.Tensor).ToList(), grads);
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
        var grads = _messages.ReceiveOutputGrads(s, i, saved.Outputs, step);
        long start = BoundaryMessages.Now();
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
    }
}

using PipeSharp.Schedules;
using PipeSharp.Tracing;
using PipeSharp.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Runs one action of any schedule. What an action needs and where its results go follow from the stage
/// number alone: stage 0 reads the micro-batch, other stages receive the previous stage's activation; the last
/// stage computes the weighted loss, others send their output on; a backward (B, or I) sends the input gradient
/// to the previous stage. Nothing here knows which schedule runs.
/// </summary>
internal sealed class ActionRunner(int replica, IReadOnlyList<StageRuntime?> stages, ITransport transport, Func<Tensor, Tensor, Tensor>? loss)
{
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

    private static long Now() => System.Diagnostics.Stopwatch.GetTimestamp();

    private long Forward(int s, int i, StepContext step)
    {
        var stage = stages[s]!;
        var data = step.Replicas[replica]!;
        bool training = step.Training;
        using var scope = torch.NewDisposeScope();
        var received = s == 0 ? null : Receive(new MessageKey(MessageKind.Activation, s, i), step);
        long start = Now();
        bool measure = step.ActivationBytes is not null; // keep the graph as training would, to measure what it holds
        Tensor input = received is null ? data.Inputs[i].to(stage.Device) : Arrive(received, stage.Device, training || measure);
        using var gradMode = training || measure ? null : torch.no_grad();
        long? before = measure ? NativeHeap.BytesInUse() : null;
        var (output, layers) = stage.Forward(input, captureLayers: training && step.IsSplit(s, i));
        if (measure && before is { } b && NativeHeap.BytesInUse() is { } a) step.ActivationBytes![s] = Math.Max(0, a - b);

        if (s == Last)
        {
            if (!training)
            {
                if (step.Evaluation is { } evaluation) evaluation.Score(replica, data, i, output, stage.Device, loss!);
                else data.Outputs[i] = output.detach().DetachFromDisposeScope();
                return start;
            }
            var target = data.Targets![i].to(stage.Device);
            var weighted = loss!(output, target).mul(data.LossWeights[i]);
            data.AddLoss(weighted.item<float>());
            stage.Save(i, new SavedForward(s == 0 ? null : input, weighted, layers));
        }
        else
        {
            Send(new MessageKey(MessageKind.Activation, s + 1, i), s, output.detach().DetachFromDisposeScope(), step);
            if (training) stage.Save(i, new SavedForward(s == 0 ? null : input, output, layers));
        }
        return start;
    }

    // Full backward: input and weight gradients in one pass.
    private long Backward(int s, int i, StepContext step)
    {
        var stage = stages[s]!;
        using var scope = torch.NewDisposeScope();
        var grad = OutputGrad(s, i, step, scope);
        long start = Now();
        var saved = stage.Take(i);
        Attach(scope, saved);
        if (grad is null) saved.Output.backward();
        else saved.Output.backward([grad]);
        if (s > 0) SendInputGrad(s, i, saved.Input!.grad, step);
        return start;
    }

    // Input gradient only: the gradients of the stage input and of every captured layer output, from one pass that
    // skips all weight gradients. The layer outputs and their gradients are kept for the weight-gradient action.
    private long InputGrad(int s, int i, StepContext step)
    {
        var stage = stages[s]!;
        using var scope = torch.NewDisposeScope();
        var grad = OutputGrad(s, i, step, scope);
        long start = Now();
        var saved = stage.Take(i);
        scope.Attach(saved.Output);
        if (saved.Input is not null) scope.Attach(saved.Input);
        var layers = saved.LayerOutputs ?? [];

        var wrt = new List<Tensor>();
        if (s > 0) wrt.Add(saved.Input!);
        wrt.AddRange(layers.Select(l => l.Output));
        var grads = wrt.Count == 0
            ? []
            : torch.autograd.grad([saved.Output], wrt, grad is null ? null : [grad], retain_graph: true, allow_unused: true);
        if (s > 0) SendInputGrad(s, i, grads[0], step);

        int offset = s > 0 ? 1 : 0;
        var deferred = new List<(LayerOutput, Tensor)>();
        for (int k = 0; k < layers.Count; k++)
        {
            var g = grads[offset + k];
            if (g is null || g.IsInvalid) { layers[k].Output.Dispose(); continue; } // this layer's output does not reach the stage output
            deferred.Add((layers[k], g));
        }
        var uncovered = stage.Uncovered(layers);
        if (uncovered.Count > 0)
        {
            // Parameters no captured layer leads to: their gradient comes from the stage output in the W action.
            stage.Defer(i, new DeferredWeightGrad(deferred, saved.Output.alias(), grad?.alias(), uncovered));
        }
        else
        {
            stage.Defer(i, new DeferredWeightGrad(deferred, null, null, uncovered));
        }
        return start;
    }

    // Weight gradient: for each captured layer, backpropagate its output gradient to that layer's own parameters.
    private long WeightGrad(int s, int i)
    {
        long start = Now();
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
            if (deferred.Output is not null && deferred.Uncovered.Count > 0)
            {
                torch.autograd.backward([deferred.Output], deferred.OutputGrad is null ? null : [deferred.OutputGrad],
                    retain_graph: true, inputs: deferred.Uncovered.ToList());
            }
        }
        finally
        {
            StageRuntime.Dispose(deferred);
        }
        return start;
    }

    // The gradient of stage s's output for micro-batch i: received from stage s+1, or none on the last stage
    // (whose saved output is the weighted loss).
    private Tensor? OutputGrad(int s, int i, StepContext step, DisposeScope scope)
    {
        if (s == Last) return null;
        var received = Receive(new MessageKey(MessageKind.Gradient, s, i), step);
        scope.Attach(received);
        return received.to(stages[s]!.Device);
    }

    private void SendInputGrad(int s, int i, Tensor? inputGrad, StepContext step)
    {
        if (inputGrad is null || inputGrad.IsInvalid)
            throw new InvalidOperationException(
                $"stage {s} did not produce a gradient for its input: its output does not depend on its input.");
        Send(new MessageKey(MessageKind.Gradient, s - 1, i), s, inputGrad.detach().DetachFromDisposeScope(), step);
    }

    private void Send(MessageKey key, int fromStage, Tensor tensor, StepContext step)
    {
        if (replica == step.TracedReplica) step.RecordSend(key, stages[fromStage]!.Rank, Now());
        transport.Send(key, tensor);
    }

    private Tensor Receive(MessageKey key, StepContext step)
    {
        var tensor = transport.Receive(key, step.Cancellation);
        if (replica == step.TracedReplica) step.RecordReceive(key, stages[key.Stage]!.Rank, Now());
        return tensor;
    }

    private static void Attach(DisposeScope scope, SavedForward saved)
    {
        scope.Attach(saved.Output);
        if (saved.Input is not null) scope.Attach(saved.Input);
        if (saved.LayerOutputs != null)
            foreach (var l in saved.LayerOutputs) scope.Attach(l.Output);
    }

    // A received activation becomes this stage's input: on this stage's device, a leaf of this stage's graph.
    private static Tensor Arrive(Tensor received, Device device, bool training)
    {
        using var scope = torch.NewDisposeScope();
        scope.Attach(received);
        var leaf = received.to(device).detach();
        if (training) leaf.requires_grad_(true);
        return scope.MoveToOuter(leaf);
    }
}

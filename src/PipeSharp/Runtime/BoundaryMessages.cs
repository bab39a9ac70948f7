using PipeSharp.Boundaries;
using PipeSharp.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// The messages of a stage's boundary: the tensors a forward takes (from the micro-batch, or from the stage that makes
/// each) and sends (to each later stage that reads it), and the gradients a backward receives and sends back. A tensor
/// travels with its <c>requires_grad</c> flag: one sent without it becomes a plain tensor at the consumer (no leaf, no
/// gradient message back); one sent with it becomes a leaf whose gradient is sent straight back to its maker.
/// </summary>
internal sealed class BoundaryMessages(int replica, IReadOnlyList<StageRuntime?> stages, ITransport transport)
{
    public static long Now() => System.Diagnostics.Stopwatch.GetTimestamp();

    /// <summary>The tensors stage <paramref name="plan"/> reads from outside, on its device; and the leaves that need a gradient.</summary>
    public (TensorSet Inputs, List<ReceivedValue> Leaves) ReceiveInputs(StageBoundary plan, int i, TensorSet batch, StepContext step)
    {
        var stage = stages[plan.Stage]!;
        var inputs = new TensorSet();
        var leaves = new List<ReceivedValue>();
        foreach (var input in plan.Inputs)
        {
            if (input.From < 0)
            {
                inputs.Add(input.Name, batch[input.Name].to(stage.Device));
                continue;
            }
            var received = Receive(new MessageKey(MessageKind.Activation, plan.Stage, i, input.From, input.Value), step);
            var leaf = Arrive(received, stage.Device, step.Training || step.ActivationBytes is not null); // a memory measurement keeps the graph too
            inputs.Add(input.Name, leaf);
            if (leaf.requires_grad) leaves.Add(new ReceivedValue(input.Name, input.Value, input.From, leaf));
        }
        return (inputs, leaves);
    }

    /// <summary>Sends each tensor later stages read to each of them; returns those that will get gradients back.</summary>
    public List<SentValue> SendOutputs(StageBoundary plan, int i, TensorSet values, bool training, StepContext step)
    {
        var sent = new List<SentValue>();
        foreach (var output in plan.Outputs)
        {
            var tensor = values[output.Name];
            bool gradient = training && tensor.requires_grad;
            foreach (int consumer in output.Consumers)
            {
                var message = tensor.detach();
                if (gradient) message.requires_grad_(true); // the flag travels: the consumer makes a leaf and sends its gradient back
                Send(new MessageKey(MessageKind.Activation, consumer, i, plan.Stage, output.Value), message.DetachFromDisposeScope(), step);
            }
            if (gradient) sent.Add(new SentValue(output.Name, output.Value, output.Consumers, tensor));
        }
        return sent;
    }

    /// <summary>
    /// The gradient of each saved output, summed over the stages that read it, on this stage's device; null on the last
    /// stage (whose only output is the weighted loss).
    /// </summary>
    public List<Tensor>? ReceiveOutputGrads(int s, int i, IReadOnlyList<SentValue> outputs, StepContext step)
    {
        if (outputs.Count == 0 || outputs[0].Consumers.Count == 0) return null;
        var device = stages[s]!.Device;
        var grads = new List<Tensor>();
        foreach (var output in outputs)
        {
            Tensor? sum = null;
            foreach (int consumer in output.Consumers)
            {
                var local = Adopt(Receive(new MessageKey(MessageKind.Gradient, s, i, consumer, output.Value), step), g => g.to(device));
                sum = sum is null ? local : sum + local;
            }
            grads.Add(sum!);
        }
        return grads;
    }

    /// <summary>Sends the gradient of each received leaf back to the stage that made it (zeros if the stage did not use it).</summary>
    public void SendInputGrads(int s, int i, IReadOnlyList<ReceivedValue> leaves, IReadOnlyList<Tensor?> grads, StepContext step)
    {
        for (int k = 0; k < leaves.Count; k++)
        {
            var leaf = leaves[k];
            var g = grads[k];
            var message = g is null || g.IsInvalid ? torch.zeros_like(leaf.Leaf) : g.detach();
            Send(new MessageKey(MessageKind.Gradient, leaf.From, i, s, leaf.Value), message.DetachFromDisposeScope(), step);
        }
    }

    private void Send(MessageKey key, Tensor tensor, StepContext step)
    {
        if (replica == step.TracedReplica) step.RecordSend(key, stages[key.From]!.Rank, Now());
        transport.Send(key, tensor);
    }

    private Tensor Receive(MessageKey key, StepContext step)
    {
        var tensor = transport.Receive(key, step.Cancellation);
        if (replica == step.TracedReplica) step.RecordReceive(key, stages[key.Stage]!.Rank, Now());
        return tensor;
    }

    // A received tensor becomes this stage's: on this stage's device; a leaf of this stage's graph if it was sent with
    // requires_grad (and the step trains), else a plain tensor.
    private static Tensor Arrive(Tensor received, Device device, bool training)
    {
        bool gradient = training && received.requires_grad;
        return Adopt(received, r =>
        {
            var leaf = r.to(device).detach();
            return gradient ? leaf.requires_grad_(true) : leaf;
        });
    }

    // A received tensor belongs to the receiver: disposed with the action's scope, or kept as what make returns.
    private static Tensor Adopt(Tensor received, Func<Tensor, Tensor> make)
    {
        using var scope = torch.NewDisposeScope();
        scope.Attach(received);
        return scope.MoveToOuter(make(received));
    }
}

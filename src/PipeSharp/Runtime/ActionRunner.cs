using PipeSharp.Schedules;
using PipeSharp.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Runs one action of any schedule. What an action needs and where its results go follow from the stage
/// number alone: stage 0 reads the micro-batch, other stages receive the previous stage's activation; the last
/// stage computes the weighted loss, others send their output on. Nothing here knows which schedule runs.
/// </summary>
internal sealed class ActionRunner(IReadOnlyList<StageRuntime> stages, ITransport transport, Func<Tensor, Tensor, Tensor>? loss)
{
    private int Last => stages.Count - 1;

    public void Run(PipelineAction action, StepContext step, bool training)
    {
        switch (action.Kind)
        {
            case ActionKind.Forward: Forward(action.Stage, action.MicroBatch, step, training); break;
            case ActionKind.Backward: Backward(action.Stage, action.MicroBatch, step); break;
            default: throw new NotSupportedException($"action kind {action.Kind} is not supported by this runtime.");
        }
    }

    private void Forward(int s, int i, StepContext step, bool training)
    {
        var stage = stages[s];
        using var scope = torch.NewDisposeScope();
        Tensor input = s == 0
            ? step.Inputs[i].to(stage.Device)
            : Arrive(transport.Receive(new MessageKey(MessageKind.Activation, s, i), step.Cancellation), stage.Device, training);
        using var gradMode = training ? null : torch.no_grad();
        Tensor output = stage.Module.forward(input);

        if (s == Last)
        {
            if (!training)
            {
                step.Outputs[i] = output.detach().DetachFromDisposeScope();
                return;
            }
            var target = step.Targets![i].to(stage.Device);
            var weighted = loss!(output, target).mul(step.LossWeights[i]);
            step.AddLoss(weighted.item<float>());
            stage.Save(i, s == 0 ? null : input, weighted);
        }
        else
        {
            transport.Send(new MessageKey(MessageKind.Activation, s + 1, i), output.detach().DetachFromDisposeScope());
            if (training) stage.Save(i, s == 0 ? null : input, output);
        }
    }

    private void Backward(int s, int i, StepContext step)
    {
        var stage = stages[s];
        using var scope = torch.NewDisposeScope();
        var (input, output) = stage.Take(i);
        scope.Attach(output);
        if (input is not null) scope.Attach(input);

        if (s == Last)
        {
            output.backward();
        }
        else
        {
            var received = transport.Receive(new MessageKey(MessageKind.Gradient, s, i), step.Cancellation);
            scope.Attach(received);
            var grad = received.to(stage.Device);
            output.backward([grad]);
        }

        if (s > 0)
        {
            var inputGrad = input!.grad ?? throw new InvalidOperationException(
                $"stage {s} did not produce a gradient for its input: its output does not depend on its input.");
            transport.Send(new MessageKey(MessageKind.Gradient, s - 1, i), inputGrad.detach().DetachFromDisposeScope());
        }
    }

    // A received activation becomes this stage's input: on this stage's device, a leaf of this stage's graph.
    private static Tensor Arrive(Tensor received, Device device, bool training)
    {
        var scope = torch.NewDisposeScope();
        try
        {
            scope.Attach(received);
            var leaf = received.to(device).detach();
            if (training) leaf.requires_grad_(true);
            return scope.MoveToOuter(leaf);
        }
        finally
        {
            scope.Dispose();
        }
    }
}

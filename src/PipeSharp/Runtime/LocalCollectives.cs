using PipeSharp.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Collectives for ranks that are all threads of this process: after the step, the main thread sums each
/// gradient over the replicas in replica order and gives every replica the sum.
/// </summary>
internal sealed class LocalCollectives(IReadOnlyList<ReplicaRuntime> replicas) : ICollectives
{
    public void MatchReplicas()
    {
        using var noGrad = no_grad();
        for (int d = 1; d < replicas.Count; d++)
            for (int s = 0; s < replicas[0].Stages.Length; s++)
            {
                var source = replicas[0].Stages[s]!.Module.state_dict();
                foreach (var (name, target) in replicas[d].Stages[s]!.Module.state_dict()) target.copy_(source[name]);
            }
    }

    public void StageGradientsReady(ReplicaRuntime replica, StageRuntime stage)
    {
    }

    public void ReduceGradients(CancellationToken cancellation)
    {
        if (replicas.Count > 1)
        {
            using var noGrad = no_grad();
            for (int s = 0; s < replicas[0].Stages.Length; s++)
            {
                var perReplica = replicas.Select(r => ParameterIdentity.Distinct(r.Stages[s]!.Module.parameters()).ToList()).ToList();
                for (int k = 0; k < perReplica[0].Count; k++)
                {
                    using var scope = NewDisposeScope();
                    var grads = perReplica.Select(ps => ps[k].grad).ToList();
                    if (grads.All(g => g is null)) continue;
                    var first = perReplica[0][k];
                    Tensor sum = zeros_like(first);
                    foreach (var g in grads) if (g is not null) sum.add_(g.to(first.device));
                    foreach (var ps in perReplica)
                    {
                        if (ps[k].grad is { } g) g.copy_(sum);
                        else ps[k].grad = sum.to(ps[k].device).clone().DetachFromDisposeScope();
                    }
                }
            }
        }
        foreach (var r in replicas) r.Shared.SynchroniseGradients();
    }

    public double SumOverStages(double[] perStage, CancellationToken cancellation) => perStage.Sum();

    public (double Loss, int Stop) TotalLoss(StepContext step, int stop, CancellationToken cancellation) => (step.Replicas.Sum(r => r!.Loss), stop);

    public double[] SumOverProcesses(double[] values, CancellationToken cancellation) => values;

    public double[] SumOverReplicas(StepContext step, int count, Func<int, double[]> lastStageValues, CancellationToken cancellation)
    {
        var sums = new double[count];
        for (int d = 0; d < step.Replicas.Length; d++)
        {
            if (step.Replicas[d] is null) continue;
            var values = lastStageValues(d);
            for (int k = 0; k < count; k++) sums[k] += values[k];
        }
        return sums;
    }

    public Tensor CollectOutputs(StepContext step, CancellationToken cancellation) =>
        torch.cat(step.Replicas.SelectMany(r => r!.Outputs).Select(o => o!).ToArray(), 0);

    public double[] StageBusy(StepContext step, CancellationToken cancellation) => step.StageBusy.ToArray();

    public double SharedCopyDifference() => replicas.Max(r => r.Shared.MaxCopyDifference());

    public void ReportFailure(Exception failure)
    {
    }

    public void Dispose()
    {
    }
}

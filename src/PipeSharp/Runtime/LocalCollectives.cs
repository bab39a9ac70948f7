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

    public bool ReducesOnWorkers => replicas.Count > 1;

    // Each stage's distinct parameters in each replica, in module order (the same order in every replica), and which
    // replica's worker sums each of them; made on first use.
    private sealed record Shares(List<TorchSharp.Modules.Parameter>[,] Parameters, int[][] SummedBy);
    private Shares? _shares;

    /// <summary>
    /// This replica's share of the parameters of each stage of <paramref name="rank"/> (the D workers of a rank split
    /// them by size, each on its own thread and intra-op count): the gradients of the D replicas added in replica
    /// order into the first one (0 + g0 + g1 + ..., the sum the main thread used to make), copied to the others.
    /// </summary>
    public void ReduceOnWorker(ReplicaRuntime replica, int rank, Action<StageRuntime, TorchSharp.Modules.Parameter>? reduced)
    {
        var (parameters, summedBy) = Share();
        using var noGrad = no_grad();
        foreach (var stage in replica.StagesOf(rank))
        {
            int s = stage.Module.Index;
            for (int k = 0; k < parameters[0, s].Count; k++)
                if (summedBy[s][k] == replica.Index && Sum(parameters, s, k))
                    reduced?.Invoke(stage, parameters[replica.Index, s][k]); // outside Sum's scope
        }
    }

    // Each parameter to the worker with the fewest values so far, in module order (the largest first would balance
    // better, but this is within one tensor of even for a model of many similar layers).
    private static int[] Split(IReadOnlyList<TorchSharp.Modules.Parameter> parameters, int workers)
    {
        var load = new long[workers];
        var owner = new int[parameters.Count];
        for (int k = 0; k < parameters.Count; k++)
        {
            int least = Array.IndexOf(load, load.Min());
            owner[k] = least;
            load[least] += parameters[k].NumberOfElements;
        }
        return owner;
    }

    // Parameter k of stage s summed over the replicas; false if no replica has a gradient for it.
    private bool Sum(List<TorchSharp.Modules.Parameter>[,] parameters, int s, int k)
    {
        using var scope = NewDisposeScope();
        using var one = 1.ToScalar(); // add_(g) would convert 1 implicitly: see Native/CollectionPause
        Tensor? sum = null;
        int into = -1;
        for (int d = 0; d < replicas.Count; d++)
        {
            if (parameters[d, s][k].grad is not { } g) continue;
            if (sum is null) (sum, into) = (g, d);
            else sum.add_(g.to(sum.device), one);
        }
        if (sum is null) return false;
        for (int d = 0; d < replicas.Count; d++)
        {
            if (d == into) continue;
            var p = parameters[d, s][k];
            if (p.grad is { } g) g.copy_(sum);
            else p.grad = sum.to(p.device).clone().DetachFromDisposeScope();
        }
        return true;
    }

    private Shares Share()
    {
        if (Volatile.Read(ref _shares) is { } known) return known;
        lock (replicas)
        {
            if (_shares is null)
            {
                var table = new List<TorchSharp.Modules.Parameter>[replicas.Count, replicas[0].Stages.Length];
                for (int d = 0; d < replicas.Count; d++)
                    for (int s = 0; s < replicas[0].Stages.Length; s++)
                        table[d, s] = ParameterIdentity.Distinct(replicas[d].Stages[s]!.Module.parameters()).ToList();
                var summedBy = Enumerable.Range(0, replicas[0].Stages.Length).Select(s => Split(table[0, s], replicas.Count)).ToArray();
                Volatile.Write(ref _shares, new Shares(table, summedBy));
            }
            return _shares!;
        }
    }

    // The replicas' sums are made by the workers (ReduceOnWorker); what is left is the shared copies, on this thread.
    public void ReduceGradients(CancellationToken cancellation)
    {
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

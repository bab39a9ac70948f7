using PipeSharp.Native;
using PipeSharp.Backends;
using PipeSharp.Transport;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Collectives across processes, one rank per process, on the backend's process groups. A stage's gradients are summed over its replicas
/// with non-blocking all-reduces in buckets, started on the worker thread as soon as the stage's last backward of
/// the step is done (so they overlap the rank's remaining backwards); shared-parameter copies are summed over the
/// ranks that own them with an all-gather added up in owner order, so every owner gets bit-identical sums.
/// </summary>
internal sealed class CrossProcessCollectives : ICollectives
{
    private const long BucketBytes = 16 << 20;

    private readonly IBackend _backend;
    private readonly ReplicaRuntime _replica;
    private readonly ITransport _transport;
    private readonly int _replicas;
    private readonly IProcessGroup? _replicaGroup;
    private readonly List<(SharedParameters.Group Group, IProcessGroup? Owners)> _shared = new();
    private readonly List<(IReadOnlyList<Parameter> Parameters, Tensor Flat, ICollectiveOperation Operation)> _pending = new();

    /// <param name="backend">The backend; this process runs one rank, of <paramref name="replica"/>.</param>
    /// <param name="replica">The replica this process's rank belongs to.</param>
    /// <param name="ranks">Pipeline ranks per replica.</param>
    /// <param name="replicas">Number of replicas.</param>
    public CrossProcessCollectives(IBackend backend, ReplicaRuntime replica, int ranks, int replicas)
    {
        _backend = backend;
        _replica = replica;
        _transport = replica.Transport;
        _replicas = replicas;
        int rank = backend.ProcessIndex % ranks;
        // Collective calls: every process makes the same splits in the same order.
        _replicaGroup = backend.Split(rank, replica.Index);
        var groups = replica.Shared.Groups;
        for (int g = 0; g < groups.Count; g++)
        {
            bool owner = groups[g].Copies.Count > 0;
            _shared.Add((groups[g], backend.Split(owner ? g * replicas + replica.Index : -1, backend.ProcessIndex)));
        }
    }

    public void MatchReplicas()
    {
        if (_replicas == 1) return;
        using var noGrad = no_grad();
        foreach (var stage in _replica.Local)
        {
            using var scope = NewDisposeScope();
            var tensors = stage.Module.state_dict().Values.Where(t => t.NumberOfElements > 0).ToList();
            foreach (var group in tensors.GroupBy(t => t.dtype))
            {
                var list = group.ToList();
                var flat = torch.cat(list.Select(t => t.detach().reshape(-1).cpu()).ToArray()).contiguous();
                _replicaGroup!.Broadcast(flat, 0).Wait(CancellationToken.None);
                long offset = 0;
                foreach (var t in list)
                {
                    t.copy_(flat.narrow(0, offset, t.NumberOfElements).view_as(t));
                    offset += t.NumberOfElements;
                }
            }
        }
    }

    public void StageGradientsReady(ReplicaRuntime replica, StageRuntime stage)
    {
        if (_replicas == 1) return;
        using var noGrad = no_grad();
        var parameters = ParameterIdentity.Distinct(stage.Module.parameters()).Where(p => p.requires_grad).ToList();
        var bucket = new List<Parameter>();
        long bytes = 0;
        foreach (var p in parameters)
        {
            bucket.Add(p);
            bytes += p.NumberOfElements * p.ElementSize;
            if (bytes < BucketBytes) continue;
            Start(bucket);
            bucket = new List<Parameter>();
            bytes = 0;
        }
        if (bucket.Count > 0) Start(bucket);
    }

    private void Start(List<Parameter> bucket)
    {
        using var scope = NewDisposeScope();
        foreach (var p in bucket) p.grad ??= zeros_like(p).DetachFromDisposeScope();
        var flat = torch.cat(bucket.Select(p => p.grad!.reshape(-1).cpu()).ToArray()).contiguous().DetachFromDisposeScope();
        var op = _replicaGroup!.AllReduceSum(flat);
        lock (_pending) _pending.Add((bucket, flat, op));
    }

    public bool ReducesOnWorkers => false; // the replicas' sums are the all-reduces started in StageGradientsReady

    public void ReduceOnWorker(ReplicaRuntime replica, int rank, Action<StageRuntime, Parameter>? reduced) =>
        throw new NotSupportedException("across processes the replicas' gradients are summed by all-reduces, not by the workers.");

    public void ReduceGradients(CancellationToken cancellation)
    {
        using var noGrad = no_grad();
        try
        {
            foreach (var (parameters, flat, op) in _pending)
            {
                op.Wait(cancellation);
                long offset = 0;
                foreach (var p in parameters)
                {
                    p.grad!.copy_(flat.narrow(0, offset, p.NumberOfElements).view_as(p.grad!));
                    offset += p.NumberOfElements;
                }
            }
        }
        finally
        {
            // After a failure the buffers stay with the backend (the process is going down); otherwise they are done.
            if (_backend.Failure == null) foreach (var (_, flat, _) in _pending) flat.Dispose();
            _pending.Clear();
        }
        foreach (var (group, owners) in _shared)
        {
            if (group.Copies.Count == 0) continue;
            using var scope = NewDisposeScope();
            var first = group.Copies[0].Copy;
            var local = zeros_like(first, device: CPU);
            foreach (var (_, p) in group.Copies)
                if (p.grad is { } g) local.add_(g.cpu());
            var sum = local;
            if (owners is { Size: > 1 })
            {
                var all = torch.empty(new long[] { owners.Size }.Concat(first.shape).ToArray(), first.dtype);
                owners.AllGather(local.contiguous(), all).Wait(cancellation);
                sum = all[0].clone();
                for (int k = 1; k < owners.Size; k++) sum.add_(all[k]);
            }
            foreach (var (_, p) in group.Copies)
            {
                if (p.grad is { } g) g.copy_(sum);
                else p.grad = sum.to(p.device).clone().DetachFromDisposeScope();
            }
        }
    }

    public double SumOverStages(double[] perStage, CancellationToken cancellation)
    {
        // Only replica 0 contributes: a value plus zeros is that value, so every rank adds up the same numbers.
        var mine = _replica.Index == 0 ? perStage : new double[perStage.Length];
        return _backend.AllReduceSum(mine, cancellation).Sum();
    }

    public (double Loss, int Stop) TotalLoss(StepContext step, int stop, CancellationToken cancellation)
    {
        // One reduction: each replica's loss share, then one slot per rank for its stop code (a sum of one value and
        // zeros is that value, so the largest slot is the largest code). A few bytes more on the step's only
        // reduction that every rank makes anyway.
        var values = new double[_replicas + _backend.ProcessCount];
        values[_replica.Index] = _replica.Stages[^1] != null ? step.Replicas[_replica.Index]!.Loss : 0;
        values[_replicas + _backend.ProcessIndex] = stop;
        var sums = _backend.AllReduceSum(values, cancellation);
        return (sums.Take(_replicas).Sum(), (int)sums.Skip(_replicas).Max());
    }

    public double[] StageBusy(StepContext step, CancellationToken cancellation)
    {
        double[] mine;
        lock (step.StageBusy) mine = _replica.Index == 0 ? step.StageBusy.ToArray() : new double[step.StageBusy.Length];
        return _backend.AllReduceSum(mine, cancellation);
    }

    public double[] SumOverProcesses(double[] values, CancellationToken cancellation) => _backend.AllReduceSum(values, cancellation);

    public double[] SumOverReplicas(StepContext step, int count, Func<int, double[]> lastStageValues, CancellationToken cancellation)
    {
        // The process of each replica's last stage gives its values, every other process zeros: one small reduction.
        var mine = _replica.Stages[^1] != null ? lastStageValues(_replica.Index) : new double[count];
        return _backend.AllReduceSum(mine, cancellation);
    }

    public Tensor CollectOutputs(StepContext step, CancellationToken cancellation)
    {
        var mine = step.Replicas[_replica.Index]!;
        int m = mine.Outputs.Length;
        bool holdsLast = _replica.Stages[^1] != null;
        if (holdsLast)
        {
            for (int r = 0; r < _backend.ProcessCount; r++)
            {
                if (r == _backend.ProcessIndex) continue;
                for (int i = 0; i < m; i++)
                {
                    _transport.SendTo(r, new MessageKey(MessageKind.Output, 0, _replica.Index * m + i), mine.Outputs[i]!.clone());
                }
            }
        }
        var parts = new List<Tensor>();
        using var scope = NewDisposeScope();
        for (int d = 0; d < _replicas; d++)
        {
            for (int i = 0; i < m; i++)
            {
                if (d == _replica.Index && holdsLast) { parts.Add(mine.Outputs[i]!); continue; }
                var received = _transport.Receive(new MessageKey(MessageKind.Output, 0, d * m + i), cancellation);
                scope.Attach(received);
                parts.Add(received);
            }
        }
        return torch.cat(parts.ToArray(), 0).DetachFromDisposeScope();
    }

    public double SharedCopyDifference()
    {
        double local = _replica.Shared.MaxCopyDifference();
        foreach (var (group, owners) in _shared)
        {
            if (group.Copies.Count == 0 || owners is not { Size: > 1 }) continue;
            using var scope = NewDisposeScope();
            var mine = group.Copies[0].Copy.detach().cpu().contiguous();
            var all = torch.empty(new long[] { owners.Size }.Concat(mine.shape).ToArray(), mine.dtype);
            owners.AllGather(mine, all).Wait(CancellationToken.None);
            for (int k = 1; k < owners.Size; k++) local = Math.Max(local, (all[k] - all[0]).abs().max().item<float>());
        }
        // Every rank learns the largest: the sum of one value per rank is not it, so gather them all.
        var values = new double[_backend.ProcessCount];
        values[_backend.ProcessIndex] = local;
        return _backend.AllReduceSum(values).Max();
    }

    public void ReportFailure(Exception failure) => _backend.ReportFailure(failure);

    public void Dispose()
    {
    }
}

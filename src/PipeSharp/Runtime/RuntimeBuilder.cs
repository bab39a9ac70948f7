using PipeSharp.Native;
using PipeSharp.Backends;
using PipeSharp.Boundaries;
using PipeSharp.Partitioning;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>A model as an ordered list of layers, with their names in the model (null: numbered).</summary>
internal sealed record ModelLayers(IReadOnlyList<nn.Module> Layers, IReadOnlyList<string>? Names);

/// <summary>What <see cref="RuntimeBuilder.Build"/> made: the replicas held here, one worker per rank held here.</summary>
internal sealed record BuiltRuntime(
    ReplicaRuntime[] Replicas,
    (ReplicaRuntime Replica, int Rank, RankWorker Worker)[] Workers,
    IReadOnlyList<IReadOnlyList<string>> StageStateNames);

/// <summary>
/// Makes what a plan runs in this process: for each replica held here, its model split into stages, the local
/// stages on their ranks' devices with their optimizers (the other processes' stages freed at once), the copies of
/// shared parameters, the replica's transport and action runner; and one worker thread per rank held here.
/// </summary>
internal static class RuntimeBuilder
{
    public static BuiltRuntime Build(
        PipelinePlan plan,
        BoundaryPlan boundaries,
        ModelLayers first,
        Func<ModelLayers>? another,
        IBackend backend,
        Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler)
    {
        var schedule = plan.Schedule;
        var built = new List<ReplicaRuntime>();
        var workers = new List<(ReplicaRuntime, int, RankWorker)>();
        IReadOnlyList<IReadOnlyList<string>>? stateNames = null;
        try
        {
            foreach (int d in plan.LocalReplicas)
            {
                var model = built.Count == 0 ? first : another!();
                var modules = ModelSplitter.Split(model.Layers, plan.Balance, model.Names);
                stateNames ??= modules.Select(m => (IReadOnlyList<string>)m.state_dict().Keys.ToList()).ToList();
                var untied = SharedParameters.Untie(modules);
                var stages = new StageRuntime?[modules.Count];
                for (int s = 0; s < modules.Count; s++)
                {
                    if (!plan.IsLocal(s)) continue;
                    int rank = schedule.StageToRank[s];
                    var device = plan.RankDevices[rank];
                    modules[s].to(device);
                    // A parameter used twice within a stage is stepped once.
                    var opt = optimizer(ParameterIdentity.Distinct(modules[s].parameters()));
                    stages[s] = new StageRuntime(modules[s], device, rank, opt, scheduler?.Invoke(opt))
                    {
                        Segments = plan.Recomputation.SegmentsOf(s, modules[s].FirstLayer, modules[s].LayerCount),
                    };
                }
                if (!plan.HostsAll) ReleaseOtherStages(modules, plan.IsLocal);
                var shared = plan.HostsAll ? untied : untied.KeepLocal(plan.IsLocal);
                int replica = d;
                var transport = backend.CreateTransport(modules.Count, plan.Schedule.MicroBatchCount * plan.Replicas,
                    key => plan.JobRank(replica, schedule.StageToRank[key.Stage]), boundaries.ValueNames.Count);
                var runtime = new ReplicaRuntime(d, stages, shared, transport, new ActionRunner(d, stages, transport, loss, boundaries));
                built.Add(runtime);
                for (int r = 0; r < plan.Ranks; r++)
                    if (plan.HostedRanks.Contains(plan.JobRank(d, r))) workers.Add((runtime, r, new RankWorker(plan.JobRank(d, r), plan.ThreadsPerRank)));
            }
        }
        catch
        {
            foreach (var (_, _, w) in workers) w.Dispose();
            foreach (var r in built) r.Dispose();
            throw;
        }
        var placement = schedule.StageToRank;
        backend.DescribeRanksAs(r =>
        {
            var held = Enumerable.Range(0, placement.Count).Where(s => placement[s] == r % plan.Ranks).ToList();
            return $"replica {r / plan.Ranks}, rank {r % plan.Ranks}: stage{(held.Count > 1 ? "s" : "")} {string.Join("+", held)}";
        });
        return new BuiltRuntime(built.ToArray(), workers.ToArray(), stateNames!);
    }

    // Across processes this one trains only its own stages. The others' parameters and buffers are freed now: left to
    // the garbage collector, their native memory (which it does not see) could stay for the whole run, and every
    // process would hold the whole model. A tensor the process's own stages also use is kept.
    private static void ReleaseOtherStages(IReadOnlyList<StageModule> modules, Func<int, bool> isLocal)
    {
        static IEnumerable<Tensor> Tensors(StageModule m) => m.parameters().Cast<Tensor>().Concat(m.buffers());
        var kept = modules.Where((_, s) => isLocal(s)).SelectMany(Tensors).Select(t => t.Handle).ToHashSet();
        for (int s = 0; s < modules.Count; s++)
        {
            if (isLocal(s)) continue;
            foreach (var t in Tensors(modules[s]).ToList())
                if (!kept.Contains(t.Handle)) t.Dispose();
        }
    }
}

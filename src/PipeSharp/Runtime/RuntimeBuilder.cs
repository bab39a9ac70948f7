using PipeSharp.Native;
using PipeSharp.Backends;
using PipeSharp.Boundaries;
using PipeSharp.Partitioning;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>What <see cref="RuntimeBuilder.Build"/> made: the replicas held here, one worker per rank held here.</summary>
internal sealed record BuiltRuntime(
    ReplicaRuntime[] Replicas,
    (ReplicaRuntime Replica, int Rank, RankWorker Worker)[] Workers,
    IReadOnlyList<IReadOnlyList<string>?> StageStateNames);

/// <summary>
/// Makes what a plan runs in this process: for each replica held here, its model's local stages (from the
/// <see cref="ModelSource"/>) on their ranks' devices with their optimizers, the copies of shared parameters, the replica's transport and action runner; and one worker thread per rank held here.
/// </summary>
internal static class RuntimeBuilder
{
    public static BuiltRuntime Build(
        PipelinePlan plan,
        BoundaryPlan boundaries,
        ModelSource source,
        IBackend backend,
        Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler)
    {
        var schedule = plan.Schedule;
        var built = new List<ReplicaRuntime>();
        var workers = new List<(ReplicaRuntime, int, RankWorker)>();
        IReadOnlyList<IReadOnlyList<string>?>? stateNames = null;
        try
        {
            foreach (int d in plan.LocalReplicas)
            {
                var model = source.Materialise(built.Count, plan);
                var modules = model.Stages;
                stateNames ??= model.StateNames;
                var stages = new StageRuntime?[modules.Length];
                for (int s = 0; s < modules.Length; s++)
                {
                    if (modules[s] is not { } module) continue;
                    int rank = schedule.StageToRank[s];
                    var device = plan.RankDevices[rank];
                    module.to(device);
                    // A parameter used twice within a stage is stepped once.
                    var opt = optimizer(ParameterIdentity.Distinct(module.parameters()));
                    stages[s] = new StageRuntime(module, device, rank, opt, scheduler?.Invoke(opt))
                    {
                        Segments = plan.Recomputation.SegmentsOf(s, module.FirstLayer, module.LayerCount),
                    };
                }
                var shared = model.Shared;
                int replica = d;
                var transport = backend.CreateTransport(modules.Length, plan.Schedule.MicroBatchCount * plan.Replicas,
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
}

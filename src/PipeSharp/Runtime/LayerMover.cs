using System.Reflection;
using PipeSharp.Backends;
using PipeSharp.Native;
using PipeSharp.Partitioning;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>What a move between two splits works with: the plans before and after, which layers change rank, where layers come from, how optimizers are made.</summary>
internal sealed record MoveContext(
    PipelinePlan Before,
    PipelinePlan After,
    LayerMovePlan Layers,
    ModelSource Source,
    IBackend Backend,
    Func<IEnumerable<Parameter>, optim.Optimizer> Optimizer,
    Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? Scheduler);

/// <summary>
/// Changes the layers of each stage of one replica between two steps: every layer whose rank changes moves with its
/// parameters, gradients and optimizer state (in one process the layer itself changes hands; across processes its
/// state goes over the backend (<see cref="LayerTransfer"/>) into the same layer built by the receiver from the
/// model's spec, and the sender frees its tensors). Each stage is then made again from its new layers, with a new
/// optimizer from the user's factory that loads the per-parameter state (the checkpoints' format,
/// <see cref="StageOptimizers"/>) and a new scheduler that takes over the old one's counters; the copies of shared
/// parameters are regrouped by the stages that now hold them.
/// </summary>
internal static class LayerMover
{
    /// <summary>Refuses a move that cannot be made, before anything changes (every process decides alike).</summary>
    public static void Check(MoveContext context, ReplicaRuntime first)
    {
        var plan = context.Layers;
        if (!context.Before.HostsAll && plan.Moves.Count > 0 && !context.Source.BuildsLayers) throw CannotMoveAcrossProcesses();
        foreach (var (owner, user) in context.Source.Ties ?? [])
            if ((plan.OldStage[owner] == plan.OldStage[user]) != (plan.NewStage[owner] == plan.NewStage[user]))
                throw new NotSupportedException(
                    $"layers {owner} and {user} share a tied parameter and would {(plan.NewStage[owner] == plan.NewStage[user] ? "join one stage" : "be split into two stages")}; " +
                    "a move keeps each tie as it was (within one stage, or across two): choose a balance that keeps them so.");
        if (context.Source.Ties is null)
            foreach (var stage in first.Local)
            {
                var users = new Dictionary<(IntPtr, string, ScalarType, string), HashSet<int>>();
                int k = 0;
                foreach (var (_, layer) in stage.Module.named_children())
                {
                    int index = stage.Module.FirstLayer + k++;
                    foreach (var p in layer.parameters())
                    {
                        var key = ParameterIdentity.Key(p);
                        if (!users.TryGetValue(key, out var set)) users[key] = set = new HashSet<int>();
                        set.Add(plan.NewStage[index]);
                    }
                }
                if (users.Values.FirstOrDefault(s => s.Count > 1) is { } split)
                    throw new NotSupportedException(
                        $"a parameter shared by layers of stage {stage.Module.Index} would be split into stages {string.Join(" and ", split.Order())}: " +
                        "choose a balance that keeps the layers that share it in one stage.");
            }
        foreach (var group in first.Shared.Groups)
        {
            var owners = group.Names.Select(n => plan.NewStage[LayerOf(context.Source, n)]).ToList();
            if (owners.Distinct().Count() != owners.Count)
                throw new NotSupportedException(
                    $"the copies of shared parameter {group.Name} would meet in one stage: choose a balance that keeps them in different stages.");
        }
    }

    /// <summary>Why a pipeline of a model the caller built cannot move layers to another process, and the fix.</summary>
    public static NotSupportedException CannotMoveAcrossProcesses() => new(
        "moving layers between processes needs a model each process can build layer by layer: make the pipeline from a ModelSpec " +
        "(e.g. Gpt.Spec, Mlp.Spec), or keep the balance it was made with (no PipelineOptions.Rebalancing).");

    /// <summary>
    /// One group of the two processes of each move's (from, to) ranks in this process's replica (null if this process
    /// is neither), in the moves' order: collective calls, made alike by every process.
    /// </summary>
    public static IReadOnlyList<IProcessGroup?> PairGroups(MoveContext context)
    {
        if (context.Before.HostsAll) return context.Layers.Moves.Select(_ => (IProcessGroup?)null).ToList();
        int ranks = context.Before.Ranks, job = context.Before.HostedRanks[0], replica = job / ranks, rank = job % ranks;
        return context.Layers.Moves
            .Select(m => context.Backend.Split(rank == m.From || rank == m.To ? replica : -1, rank == m.From ? 0 : 1))
            .ToList();
    }

    /// <summary>Moves the layers of <paramref name="replica"/> held here to their new stages; the replica then holds the new stages.</summary>
    public static void MoveReplica(ReplicaRuntime replica, MoveContext context, IReadOnlyList<IProcessGroup?> groups, CancellationToken cancellation)
    {
        var plan = context.Layers;
        string Name(int i) => context.Source.Names?[i] ?? i.ToString();
        var layers = new Dictionary<int, nn.Module>();
        foreach (var stage in replica.Local)
        {
            int k = 0;
            foreach (var (_, layer) in stage.Module.named_children()) layers[stage.Module.FirstLayer + k++] = layer;
        }
        var blobs = new Dictionary<string, byte[]>();
        foreach (var stage in replica.Local)
            foreach (var (name, blob) in StageOptimizers.Save(stage)) blobs.TryAdd(name, blob);
        var gradients = new Dictionary<string, Tensor>();
        using (no_grad())
            foreach (var (i, layer) in layers.Where(l => plan.OldRank[l.Key] != plan.NewRank[l.Key]))
                foreach (var (path, p) in layer.named_parameters())
                    if (p.grad is { } g) gradients[$"{Name(i)}.{path}"] = g.detach().cpu().clone();

        var leaving = new List<nn.Module>();
        if (!context.Before.HostsAll)
        {
            int rank = context.Before.HostedRanks[0] % context.Before.Ranks;
            for (int m = 0; m < plan.Moves.Count; m++)
            {
                var (from, to, moved) = plan.Moves[m];
                if (groups[m] is not { } group) continue;
                foreach (int i in moved)
                {
                    if (rank == from)
                    {
                        LayerTransfer.Send(group, layers[i], Name(i), blobs, cancellation);
                        leaving.Add(layers[i]);
                        layers.Remove(i);
                    }
                    else if (rank == to)
                    {
                        var built = context.Source.BuildLayer(i)!;
                        LayerTransfer.Receive(group, built, Name(i), blobs, gradients, cancellation);
                        layers[i] = built;
                    }
                }
            }
        }

        var oldSchedulers = replica.Stages.Select(s => s?.Scheduler).ToArray();
        foreach (var stage in replica.Local.ToList()) stage.Dispose(); // its hooks and optimizer; the layers go on
        foreach (var layer in leaving) Release(layer);

        var stages = new StageRuntime?[replica.Stages.Length];
        for (int s = 0; s < stages.Length; s++)
        {
            if (!context.After.IsLocal(s)) continue;
            int first = plan.FirstLayer(s), count = context.After.Balance[s];
            var ids = Enumerable.Range(first, count).ToList();
            var module = new StageModule(s, first, ids.Select(i => layers[i]).ToList(), ids.Select(Name).ToList());
            int rank = context.After.Schedule.StageToRank[s];
            var device = context.After.RankDevices[rank];
            module.to(device);
            var optimizer = context.Optimizer(ParameterIdentity.Distinct(module.parameters()));
            var scheduler = context.Scheduler?.Invoke(optimizer);
            if (scheduler is not null && oldSchedulers[s] is { } old) CopyCounters(old, scheduler);
            var runtime = new StageRuntime(module, device, rank, optimizer, scheduler)
            {
                Segments = context.After.Recomputation.SegmentsOf(s, first, count),
            };
            stages[s] = runtime;
            StageOptimizers.PlanLoad(runtime, blobs).Apply();
            using var noGrad = no_grad();
            foreach (var (name, p) in module.named_parameters())
                if (p.grad is null && gradients.TryGetValue(name, out var g)) p.grad = g.to(device).clone();
        }
        foreach (var g in gradients.Values) g.Dispose();

        var shared = replica.Shared.Groups.Select(group =>
        {
            var owners = group.Names.Select(n => plan.NewStage[LayerOf(context.Source, n)]).ToList();
            var copies = new List<(int, Parameter)>();
            for (int k = 0; k < owners.Count; k++)
                if (stages[owners[k]] is { } stage)
                    copies.Add((owners[k], stage.Module.named_parameters().First(p => p.name == group.Names[k]).parameter));
            return new SharedParameters.Group(string.Join(" = ", owners.Select((s, k) => $"stage {s}: {group.Names[k]}")), copies, owners, group.Names);
        }).ToList();
        for (int s = 0; s < stages.Length; s++) replica.Stages[s] = stages[s];
        replica.Shared = SharedParameters.Of(shared);
    }

    // The layer a model name (e.g. "3.weight", "head.lm_head.weight") belongs to.
    private static int LayerOf(ModelSource source, string name)
    {
        string layer = name[..name.IndexOf('.')];
        if (source.Names is { } names) return names.ToList().IndexOf(layer);
        return int.Parse(layer);
    }

    // A layer that left this process: its parameters (with their gradients) and buffers are freed now.
    private static void Release(nn.Module layer)
    {
        foreach (var t in layer.parameters().Cast<Tensor>().Concat(layer.buffers()).DistinctBy(t => t.Handle).ToList()) t.Dispose();
    }

    // The new scheduler goes on from the old one's step: its counters and learning-rate lists are copied field by field
    // (the optimizer it drives is the new one).
    private static void CopyCounters(optim.lr_scheduler.LRScheduler from, optim.lr_scheduler.LRScheduler to)
    {
        if (from.GetType() != to.GetType()) return;
        for (var type = from.GetType(); type is not null && type != typeof(object); type = type.BaseType)
            foreach (var field in type.GetFields(BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public | BindingFlags.DeclaredOnly))
            {
                var value = field.GetValue(from);
                if (field.FieldType.IsValueType || field.FieldType == typeof(string)) field.SetValue(to, value);
                else if (value is IEnumerable<double> list && field.FieldType.IsAssignableFrom(typeof(List<double>))) field.SetValue(to, list.ToList());
                else if (value is double[] array) field.SetValue(to, array.ToArray());
            }
    }
}

using TorchSharp;
using PipeSharp.Native;
using PipeSharp.Boundaries;
using PipeSharp.Construction;
using PipeSharp.Partitioning;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>A model as an ordered list of layers, with their names in the model (null: numbered).</summary>
internal sealed record ModelLayers(IReadOnlyList<nn.Module> Layers, IReadOnlyList<string>? Names);

/// <summary>One replica's model cut into stages: the stages held here (null elsewhere) and the copies of shared parameters.</summary>
internal sealed record ReplicaModel(StageModule?[] Stages, SharedParameters Shared, IReadOnlyList<IReadOnlyList<string>?> StateNames);

/// <summary>
/// Where a pipeline's model comes from: a model built by the caller (cut into stages, the stages of other processes
/// freed), or a <see cref="ModelSpec"/> (only the stages held here built, each layer under its own seed).
/// </summary>
internal abstract class ModelSource
{
    /// <summary>Number of layers.</summary>
    public abstract int LayerCount { get; }

    /// <summary>The layers' names in the model (null: numbered).</summary>
    public abstract IReadOnlyList<string>? Names { get; }

    /// <summary>Each layer's cost for automatic balancing.</summary>
    public abstract IReadOnlyList<double> Costs();

    /// <summary>What each layer reads and writes.</summary>
    public abstract IReadOnlyList<LayerSignature> Signatures();

    /// <summary>Each layer measured on one micro-batch, for the balance modes that measure (the model's state left as it was).</summary>
    public abstract LayerMeasurement Measure(Tensor microBatch, int threads);

    /// <summary>True if each in-process replica can get its own model.</summary>
    public abstract bool CopiesModel { get; }

    /// <summary>The model of the <paramref name="ordinal"/>-th replica held here, cut by the plan's balance.</summary>
    public abstract ReplicaModel Materialise(int ordinal, PipelinePlan plan);

    /// <summary>
    /// Each layer's distinct parameters as (identity, bytes), for the memory budget before anything is built: a parameter
    /// several layers share (a tie) has one identity.
    /// </summary>
    public abstract IReadOnlyList<IReadOnlyList<(object Key, long Bytes)>> LayerParameters();

    /// <summary>The native bytes the model's CPU tensors hold in this process before the pipeline builds anything.</summary>
    public abstract long HeldBytes();

    /// <summary>
    /// Layer <paramref name="layer"/> built alone on the CPU, for a process a move brings it to (its values are then
    /// overwritten with the sender's); null if this source cannot build layers (a model the caller built).
    /// </summary>
    public virtual nn.Module? BuildLayer(int layer) => null;

    /// <summary>True if <see cref="BuildLayer"/> builds layers (a spec), so layers can move to another process.</summary>
    public virtual bool BuildsLayers => false;

    /// <summary>The (owner, user) layers of each tie the source declares; null when ties are found by identity (a model the caller built).</summary>
    public virtual IReadOnlyList<(int Owner, int User)>? Ties => null;

    private static long Bytes(Tensor t) => t.numel() * t.element_size();

    /// <summary>A model the caller built: <paramref name="first"/>, and <paramref name="another"/> for each further replica here.</summary>
    public static ModelSource Of(ModelLayers first, Func<ModelLayers>? another) => new Built(first, another);

    /// <summary>A spec: each process builds the layers of its own stages.</summary>
    public static ModelSource Of(ModelSpec spec) => new Spec(spec);

    private sealed class Built(ModelLayers first, Func<ModelLayers>? another) : ModelSource
    {
        public override int LayerCount => first.Layers.Count;
        public override IReadOnlyList<string>? Names => first.Names;
        public override bool CopiesModel => another != null;
        public override IReadOnlyList<double> Costs() => ModelSplitter.ParameterCounts(first.Layers);
        public override IReadOnlyList<LayerSignature> Signatures() =>
            first.Layers.Select((l, i) => LayerSignature.Of(l, i, first.Names?[i])).ToList();

        public override LayerMeasurement Measure(Tensor microBatch, int threads)
        {
            var layers = first.Layers.Select((l, i) => l as nn.Module<Tensor, Tensor> ?? throw new NotSupportedException(
                $"layer {i} ({l.GetType().Name}) reads or writes named tensors: BalanceMode Time and Auto measure layers that map one " +
                "tensor to one tensor; give Balance, or BalanceMode Parameters or Uniform.")).ToList();
            // The measurement runs the caller's layers: their buffers (BatchNorm's running statistics) and the random
            // generator are put back, so training starts from the model as given.
            using var rng = get_rng_state();
            var buffers = first.Layers.SelectMany(l => l.buffers()).Select(b => (b, copy: b.detach().clone())).ToList();
            try
            {
                return LayerProfiler.Measure(layers, microBatch, threads);
            }
            finally
            {
                using (no_grad())
                    foreach (var (b, copy) in buffers) { b.copy_(copy); copy.Dispose(); }
                set_rng_state(rng);
            }
        }

        public override IReadOnlyList<IReadOnlyList<(object Key, long Bytes)>> LayerParameters() =>
            first.Layers.Select(l => (IReadOnlyList<(object, long)>)ParameterIdentity.Distinct(l.parameters())
                .Select(p => ((object)ParameterIdentity.Key(p), Bytes(p))).ToList()).ToList();

        public override long HeldBytes() =>
            ParameterIdentity.Distinct(first.Layers.SelectMany(l => l.parameters().Cast<Tensor>().Concat(l.buffers())))
                .Where(t => t.device_type == DeviceType.CPU).Sum(Bytes);

        public override ReplicaModel Materialise(int ordinal, PipelinePlan plan)
        {
            var model = ordinal == 0 ? first : another!();
            var modules = ModelSplitter.Split(model.Layers, plan.Balance, model.Names);
            var names = modules.Select(m => (IReadOnlyList<string>?)m.state_dict().Keys.ToList()).ToList();
            var untied = SharedParameters.Untie(modules);
            if (plan.HostsAll) return new ReplicaModel(modules.ToArray(), untied, names);
            ReleaseOtherStages(modules, plan.IsLocal);
            return new ReplicaModel(modules.Select((m, s) => plan.IsLocal(s) ? m : null).ToArray(), untied.KeepLocal(plan.IsLocal), names);
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

    private sealed class Spec(ModelSpec spec) : ModelSource
    {
        public override int LayerCount => spec.Layers.Count;
        public override IReadOnlyList<string>? Names => spec.Layers.Select(l => l.Name).ToList();
        public override bool CopiesModel => true;
        public override IReadOnlyList<double> Costs() => spec.Layers.Select(l => l.Cost).ToList();
        public override IReadOnlyList<LayerSignature> Signatures() => spec.Layers.Select(_ => LayerSignature.Single).ToList();

        // The whole model built once (seeded as the pipeline's, the caller's generator kept), measured and freed.
        public override LayerMeasurement Measure(Tensor microBatch, int threads)
        {
            using var rng = get_rng_state();
            using var model = spec.Build();
            try
            {
                return LayerProfiler.Measure(ModelSplitter.Layers(model), microBatch, threads);
            }
            finally
            {
                set_rng_state(rng);
            }
        }

        public override long HeldBytes() => 0; // nothing is built yet

        public override nn.Module? BuildLayer(int layer) => SpecBuilder.Build(spec, layer, 1, CPU)[0];

        public override bool BuildsLayers => true;

        public override IReadOnlyList<(int Owner, int User)>? Ties => spec.Ties.Select(t => (t.OwnerLayer, t.UserLayer)).ToList();

        // Each layer built alone and freed at once, so this process never holds more than one layer for it; a tied
        // parameter counts as its owner's.
        public override IReadOnlyList<IReadOnlyList<(object Key, long Bytes)>> LayerParameters()
        {
            var owners = spec.Ties.ToDictionary(t => (t.UserLayer, t.UserPath), t => (object)(t.OwnerLayer, t.OwnerPath));
            var result = new List<IReadOnlyList<(object, long)>>();
            for (int i = 0; i < spec.Layers.Count; i++)
            {
                using var scope = NewDisposeScope();
                using var layer = spec.BuildLayer(i);
                result.Add(layer.named_parameters()
                    .Select(p => (owners.GetValueOrDefault((i, p.name), (i, p.name)), Bytes(p.parameter)))
                    .DistinctBy(p => p.Item1).ToList());
            }
            return result;
        }

        public override ReplicaModel Materialise(int ordinal, PipelinePlan plan)
        {
            var balance = plan.Balance;
            var stages = new StageModule?[balance.Count];
            var names = new IReadOnlyList<string>?[balance.Count];
            try
            {
                int first = 0;
                for (int s = 0; s < balance.Count; first += balance[s], s++)
                {
                    if (!plan.IsLocal(s)) continue;
                    var device = plan.RankDevices[plan.Schedule.StageToRank[s]];
                    var layers = SpecBuilder.Build(spec, first, balance[s], device);
                    for (int k = 0; k < layers.Count; k++)
                        if (layers[k] is not nn.Module<Tensor, Tensor>)
                        {
                            foreach (var l in layers) l.Dispose();
                            throw new NotSupportedException(
                                $"layer {first + k} ('{spec.Layers[first + k].Name}') of the spec is a {layers[k].GetType().Name}: a pipeline built from a " +
                                "spec takes layers that map one tensor to one tensor (pass a model of set layers as a Sequential).");
                        }
                    stages[s] = new StageModule(s, first, layers, spec.Layers.Skip(first).Take(balance[s]).Select(l => l.Name).ToList());
                    names[s] = stages[s]!.state_dict().Keys.ToList();
                }
            }
            catch
            {
                foreach (var m in stages) m?.Dispose();
                throw;
            }
            return new ReplicaModel(stages, SharedParameters.FromTies(spec, balance, stages), names);
        }
    }
}

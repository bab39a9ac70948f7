using System.Reflection;
using PipeSharp.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Construction;

/// <summary>
/// Builds a run of a spec's layers: each under its own seed (the global generator seeded around the factory call, the
/// caller's state restored after), then the ties: a tie with both layers in the run becomes one parameter object;
/// one with a layer outside gets the tie's initial value (from its initializer, or from the owner layer built alone).
/// </summary>
internal static class SpecBuilder
{
    // The global generator is one per process: two builds at once (two pipelines made on two threads) would mix draws.
    private static readonly object Gate = new();

    /// <summary>Layers <paramref name="first"/>..<paramref name="first"/>+<paramref name="count"/>-1 of <paramref name="spec"/>.</summary>
    public static IReadOnlyList<nn.Module> Build(ModelSpec spec, int first, int count, Device device)
    {
        var built = new List<nn.Module>(count);
        bool InRun(int layer) => layer >= first && layer < first + count;
        try
        {
            for (int i = first; i < first + count; i++) built.Add(BuildOne(spec, i, device));
            for (int t = 0; t < spec.Ties.Count; t++)
            {
                var tie = spec.Ties[t];
                if (!InRun(tie.OwnerLayer) && !InRun(tie.UserLayer)) continue;
                using var initial = InitialValue(spec, t, InRun(tie.OwnerLayer) ? null : device);
                if (InRun(tie.OwnerLayer))
                {
                    var owner = Find(built[tie.OwnerLayer - first], tie.OwnerPath, spec, tie.OwnerLayer);
                    if (initial is not null) CopyInto(owner, initial, spec, t);
                    if (InRun(tie.UserLayer))
                        Share(built[tie.UserLayer - first], tie.UserPath, spec, tie.UserLayer,
                            Slot(built[tie.OwnerLayer - first], tie.OwnerPath, spec, tie.OwnerLayer).Get());
                }
                else
                {
                    CopyInto(Find(built[tie.UserLayer - first], tie.UserPath, spec, tie.UserLayer), initial!, spec, t);
                }
            }
        }
        catch
        {
            foreach (var m in built) m.Dispose();
            throw;
        }
        return built;
    }

    private static nn.Module BuildOne(ModelSpec spec, int layer, Device device)
    {
        var module = Seeded(spec.LayerSeed(layer), () => spec.Layers[layer].Build(device))
            ?? throw new InvalidOperationException($"the factory of layer {layer} ('{spec.Layers[layer].Name}') returned null.");
        return module;
    }

    // The tie's initial value on the CPU: from its initializer, or (none given, and the owner not built here) the
    // owner layer's value, that layer built alone under its seed and freed at once. Null when the owner is built here
    // and the tie has no initializer (the owner's own value is the value).
    private static Tensor? InitialValue(ModelSpec spec, int t, Device? ownerMissingOn)
    {
        var tie = spec.Ties[t];
        if (tie.Initialize is { } initialize)
            return Seeded(spec.TieSeed(t), () => { using (no_grad()) return initialize().detach().cpu().clone(); });
        if (ownerMissingOn is null) return null;
        using var owner = BuildOne(spec, tie.OwnerLayer, ownerMissingOn);
        using (no_grad()) return Find(owner, tie.OwnerPath, spec, tie.OwnerLayer).detach().cpu().clone();
    }

    private static T Seeded<T>(long seed, Func<T> make)
    {
        lock (Gate)
        {
            using var saved = get_rng_state();
            try
            {
                manual_seed(seed);
                return make();
            }
            finally
            {
                set_rng_state(saved);
            }
        }
    }

    private static Parameter Find(nn.Module layer, string path, ModelSpec spec, int index) =>
        layer.named_parameters().FirstOrDefault(p => p.name == path).parameter
        ?? throw new ArgumentException(
            $"layer {index} ('{spec.Layers[index].Name}') has no parameter '{path}' to tie; it has: " +
            string.Join(", ", layer.named_parameters().Select(p => p.name).Take(12)) + ".", "ties");

    private static void CopyInto(Parameter target, Tensor value, ModelSpec spec, int t)
    {
        if (!target.shape.SequenceEqual(value.shape))
            throw new ArgumentException(
                $"tie {t} ({spec.Ties[t]}) makes a value of shape [{string.Join(",", value.shape)}] for a parameter of shape " +
                $"[{string.Join(",", target.shape)}]: make the initializer's shape the parameter's.", "ties");
        using (no_grad()) target.copy_(value);
    }

    // Makes the parameter at `path` in `layer` the parameter `owner` (as a module's property gives it: TorchSharp
    // lists a parameter object once per module tree, so the list entry itself would drop the user's name).
    private static void Share(nn.Module layer, string path, ModelSpec spec, int index, Parameter owner)
    {
        var held = Find(layer, path, spec, index);
        if (!held.shape.SequenceEqual(owner.shape))
            throw new ArgumentException(
                $"'{path}' of layer {index} has shape [{string.Join(",", held.shape)}] but the parameter tied to it has [{string.Join(",", owner.shape)}].", "ties");
        Slot(layer, path, spec, index).Set(owner);
    }

    // The settable Parameter property of the module that holds the parameter at `path` of `layer`.
    private static (Func<Parameter> Get, Action<Parameter> Set) Slot(nn.Module layer, string path, ModelSpec spec, int index)
    {
        var held = Find(layer, path, spec, index);
        int dot = path.LastIndexOf('.');
        string modulePath = dot < 0 ? "" : path[..dot];
        var module = modulePath.Length == 0 ? layer : layer.named_modules().First(m => m.name == modulePath).module;
        var key = ParameterIdentity.Key(held);
        var property = module.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .FirstOrDefault(pi => pi.PropertyType == typeof(Parameter) && pi.CanRead && pi.CanWrite
                                  && pi.GetValue(module) is Parameter p && ParameterIdentity.Key(p) == key)
            ?? throw new NotSupportedException(
                $"'{path}' of layer {index} ('{spec.Layers[index].Name}') is tied, but {module.GetType().Name} has no settable Parameter " +
                "property holding it: expose it as one (as Linear.weight is).");
        return (() => (Parameter)property.GetValue(module)!, p => property.SetValue(module, p));
    }
}

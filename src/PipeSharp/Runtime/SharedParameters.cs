using PipeSharp.Native;
using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Parameters that several stages use (such as a token embedding tied to the LM head). Each stage gets its own
/// copy on its own device; after every backward the copies' gradients are summed and the sum given to every copy,
/// so that identical copies with identical optimizers stay identical and training equals single-device training
/// of the tied model.
/// </summary>
internal sealed class SharedParameters
{
    private readonly List<Group> _groups = new();

    /// <summary>
    /// One shared parameter: its copies held here (index 0 is the original, on the first stage that uses it, when
    /// held here), every stage that uses it (<paramref name="Owners"/>, in order) and its name in each.
    /// </summary>
    public sealed record Group(string Name, IReadOnlyList<(int Stage, Parameter Copy)> Copies, IReadOnlyList<int> Owners, IReadOnlyList<string> Names);

    /// <summary>The given groups (after a move regrouped the copies by the stages that now hold them).</summary>
    public static SharedParameters Of(IEnumerable<Group> groups)
    {
        var result = new SharedParameters();
        result._groups.AddRange(groups);
        return result;
    }

    /// <summary>The shared parameters found.</summary>
    public IReadOnlyList<Group> Groups => _groups;

    /// <summary>
    /// Finds parameters used by more than one stage and gives every stage after the first its own copy, swapped into
    /// the module that uses it. Call before the stages are moved to their devices and before optimizers are made.
    /// </summary>
    public static SharedParameters Untie(IReadOnlyList<Partitioning.StageModule> stages)
    {
        var result = new SharedParameters();
        var byTensor = new Dictionary<(IntPtr, string, ScalarType, string), List<(int Stage, string Name, Parameter P)>>();
        for (int s = 0; s < stages.Count; s++)
        {
            foreach (var (name, p) in stages[s].named_parameters())
            {
                var key = ParameterIdentity.Key(p);
                if (!byTensor.TryGetValue(key, out var uses)) byTensor[key] = uses = new();
                if (!uses.Any(u => u.Stage == s)) uses.Add((s, name, p));
            }
        }
        foreach (var uses in byTensor.Values.Where(u => u.Count > 1))
        {
            var original = uses[0].P;
            var copies = new List<(int, Parameter)> { (uses[0].Stage, original) };
            foreach (var (stage, name, _) in uses.Skip(1))
            {
                Parameter copy;
                using (no_grad()) copy = new Parameter(original.detach().clone(), original.requires_grad);
                Replace(stages[stage], original, copy, name);
                copies.Add((stage, copy));
            }
            result._groups.Add(new Group(string.Join(" = ", uses.Select(u => $"stage {u.Stage}: {u.Name}")), copies,
                uses.Select(u => u.Stage).ToList(), uses.Select(u => u.Name).ToList()));
        }
        return result;
    }

    /// <summary>
    /// The shared parameters of a model built from <paramref name="spec"/>, stage by stage: each tie whose two layers
    /// fall in different stages is a group (the stages built separately hold separate copies, which the spec's seeded
    /// build made equal); a tie within one stage is one parameter object already. <paramref name="stages"/> holds the
    /// stages built here (null for the others).
    /// </summary>
    public static SharedParameters FromTies(Construction.ModelSpec spec, IReadOnlyList<int> balance, IReadOnlyList<Partitioning.StageModule?> stages)
    {
        var result = new SharedParameters();
        var stageOf = new int[spec.Layers.Count];
        for (int s = 0, layer = 0; s < balance.Count; s++)
            for (int k = 0; k < balance[s]; k++) stageOf[layer++] = s;
        foreach (var tie in spec.Ties)
        {
            int owner = stageOf[tie.OwnerLayer], user = stageOf[tie.UserLayer];
            if (owner == user) continue;
            var names = new[] { $"{spec.Layers[tie.OwnerLayer].Name}.{tie.OwnerPath}", $"{spec.Layers[tie.UserLayer].Name}.{tie.UserPath}" };
            var copies = new List<(int, Parameter)>();
            foreach (var (stage, name) in new[] { (owner, names[0]), (user, names[1]) })
                if (stages[stage] is { } module)
                    copies.Add((stage, module.named_parameters().First(p => p.name == name).parameter));
            result._groups.Add(new Group($"stage {owner}: {names[0]} = stage {user}: {names[1]}", copies, [owner, user], names));
        }
        return result;
    }

    /// <summary>The same groups with only the copies of the stages this process holds.</summary>
    public SharedParameters KeepLocal(Func<int, bool> isLocal)
    {
        var result = new SharedParameters();
        foreach (var g in _groups)
            result._groups.Add(g with { Copies = g.Copies.Where(c => isLocal(c.Stage)).ToList() });
        return result;
    }

    /// <summary>Sums the gradients of each group's copies and gives the sum to every copy.</summary>
    public void SynchroniseGradients()
    {
        foreach (var group in _groups)
        {
            if (group.Copies.Count == 0) continue;
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var first = group.Copies[0].Copy;
            Tensor? sum = null;
            foreach (var (_, p) in group.Copies)
            {
                if (p.grad is not { } g) continue;
                var onFirst = g.to(first.device);
                sum = sum is null ? onFirst.clone() : sum.add_(onFirst);
            }
            if (sum is null) continue;
            foreach (var (_, p) in group.Copies)
            {
                if (p.grad is { } g) g.copy_(sum);
                else p.grad = sum.to(p.device).clone().DetachFromDisposeScope();
            }
        }
    }

    /// <summary>True for every copy but the first stage's: its gradient is counted once, on the first copy (e.g. for the norm).</summary>
    public bool IsSecondaryCopy(Parameter p) =>
        _groups.Count > 0 && // without shared parameters, no identity key to make per parameter and step
        (_secondary ??= _groups.SelectMany(g => g.Copies.Where(c => c.Stage != g.Owners[0])).Select(c => ParameterIdentity.Key(c.Copy)).ToHashSet())
        .Contains(ParameterIdentity.Key(p));

    // Worked out on first use, after the stages have been moved to their devices (a move changes the storage).
    private HashSet<(IntPtr, string, ScalarType, string)>? _secondary;

    /// <summary>The largest absolute difference between the copies of any shared parameter (0 when they are identical).</summary>
    public double MaxCopyDifference()
    {
        double max = 0;
        foreach (var group in _groups)
        {
            if (group.Copies.Count < 2) continue;
            using var scope = NewDisposeScope();
            var first = group.Copies[0].Copy.detach().cpu();
            foreach (var (_, p) in group.Copies.Skip(1))
                max = Math.Max(max, (p.detach().cpu() - first).abs().max().item<float>());
        }
        return max;
    }

    // Swaps `copy` in for `original` in the module that holds it directly, through that module's settable
    // Parameter property (as TorchSharp's own modules expose them: Linear.weight, Embedding.weight, ...).
    private static void Replace(nn.Module stage, Parameter original, Parameter copy, string name)
    {
        var key = ParameterIdentity.Key(original);
        foreach (var (_, module) in stage.named_modules())
        {
            if (!module.named_parameters(recurse: false).Any(p => ParameterIdentity.Key(p.parameter) == key)) continue;
            var property = module.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance)
                .FirstOrDefault(pi => pi.PropertyType == typeof(Parameter) && pi.CanRead && pi.CanWrite
                                      && pi.GetValue(module) is Parameter held && ParameterIdentity.Key(held) == key);
            if (property == null)
                throw new NotSupportedException(
                    $"parameter '{name}' is shared between stages, but {module.GetType().Name} has no settable Parameter property " +
                    "holding it, so PipeSharp cannot give that stage its own copy. Expose the parameter as a settable property " +
                    "(as Linear.weight is), or keep the layers that share it in one stage (see PipelineOptions.Balance).");
            property.SetValue(module, copy);
        }
    }
}

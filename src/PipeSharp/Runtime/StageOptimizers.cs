using PipeSharp.Native;
using System.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// One stage's optimizer state by parameter name (see <see cref="OptimizerStateFormat"/>): saved, checked against a
/// saved state before anything changes, loaded, and backed up so that a failed load can be undone.
/// </summary>
internal static class StageOptimizers
{
    // The optimizer of stage s and its parameters in state_dict() order with their group; null order if the optimizer
    // keeps no state per parameter.
    private static (OptimizerHelper Helper, List<(int Group, Parameter Parameter)>? Order) Layout(StageRuntime stage)
    {
        var optimizer = stage.Optimizer;
        if (optimizer is not OptimizerHelper helper)
            throw new NotSupportedException(
                $"the optimizer of stage {stage.Module.Index} ({optimizer.GetType().Name}) is implemented natively and cannot save or load its state; " +
                "use one of TorchSharp's managed optimizers (SGD, Adam, AdamW, ...).");
        var order = helper.ParamGroups.OfType<ParamGroup>()
            .SelectMany((g, gi) => g.Parameters.Select(p => (gi, p))).ToList();
        return (helper, order.Count == helper.state_dict().State.Count ? order : null);
    }

    // Checks the blobs for stage s and returns the names it uses and how to apply them.
    public static (IReadOnlyList<string> Keys, Action Apply) PlanLoad(StageRuntime stage, IReadOnlyDictionary<string, byte[]> state)
    {
        var (helper, order) = Layout(stage);
        string type = helper.GetType().Name;
        if (order is null)
        {
            string key = OptimizerStateFormat.WholeOptimizerKey(stage.Module.Index);
            if (!state.TryGetValue(key, out var whole))
                throw new ArgumentException(
                    $"{type} keeps no state per parameter, so its state cannot be re-split: the state has no entry '{key}'. " +
                    "Load it into a pipeline with the same stages and balance as it was saved with.", nameof(state));
            var (savedNames, payload) = OptimizerStateFormat.ReadWholeOptimizerBlob(whole, key);
            if (!savedNames.SequenceEqual(ParameterNames(stage)))
                throw new ArgumentException(
                    $"{type} keeps no state per parameter, so its state cannot be re-split, and stage {stage.Module.Index} now holds other parameters " +
                    "than when it was saved. Load it into a pipeline with the same stages and balance as it was saved with.", nameof(state));
            return (new[] { key }, () => helper.load_state_dict(new BinaryReader(new MemoryStream(payload))));
        }

        var names = NamesByParameter(stage);
        var sd = helper.state_dict();
        var keys = new List<string>();
        var actions = new List<Action>();
        var groupDone = new HashSet<int>();
        for (int i = 0; i < order.Count; i++)
        {
            var (group, p) = order[i];
            var candidates = names[ParameterIdentity.Key(p)];
            string name = candidates.FirstOrDefault(state.ContainsKey)
                ?? throw new ArgumentException($"the optimizer state has no entry for parameter {candidates[0]}.", nameof(state));
            var (savedType, options, payload) = OptimizerStateFormat.ReadParameterBlob(state[name], name);
            if (savedType != type)
                throw new ArgumentException(
                    $"the optimizer state of {name} is {savedType}'s but this pipeline uses {type}: use the same optimizer as the checkpoint.", nameof(state));
            keys.AddRange(candidates.Where(state.ContainsKey));
            var target = sd.State[i];
            var device = p.device;
            actions.Add(() =>
            {
                using var reader = new BinaryReader(new MemoryStream(payload));
                target.LoadStateDict(reader);
                if (reader.BaseStream.Position != reader.BaseStream.Length)
                    throw new InvalidDataException($"the optimizer state of {name} has {reader.BaseStream.Length - reader.BaseStream.Position} bytes left over.");
                // TorchSharp's SGD makes a loaded momentum buffer on the CPU (and its State.to does not move it).
                if (target is SGD.State { momentum_buffer: { } buffer } sgd && buffer.device != device)
                {
                    sgd.momentum_buffer = buffer.to(device);
                    buffer.Dispose();
                }
            });
            if (groupDone.Add(group))
            {
                var groupOptions = sd.Options[group];
                actions.Add(() => groupOptions.LoadStateDict(new BinaryReader(new MemoryStream(options))));
            }
        }
        return (keys, () => { foreach (var a in actions) a(); });
    }

    // Saves stage s's optimizer state so that a failed load can be undone.
    public static Action Backup(StageRuntime stage)
    {
        var (helper, _) = Layout(stage);
        var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true)) helper.save_state_dict(writer);
        var bytes = stream.ToArray();
        return () => helper.load_state_dict(new BinaryReader(new MemoryStream(bytes)));
    }

    // The optimizer state of stage s by parameter name (a parameter with several names in the stage under each).
    public static Dictionary<string, byte[]> Save(StageRuntime stage)
    {
        var (helper, order) = Layout(stage);
        var result = new Dictionary<string, byte[]>();
        var sd = helper.state_dict();
        if (order is null)
        {
            result[OptimizerStateFormat.WholeOptimizerKey(stage.Module.Index)] = OptimizerStateFormat.WholeOptimizerBlob(helper, ParameterNames(stage));
            return result;
        }
        var names = NamesByParameter(stage);
        for (int i = 0; i < order.Count; i++)
        {
            var blob = OptimizerStateFormat.ParameterBlob(helper, sd.Options[order[i].Group], sd.State[i]);
            foreach (var name in names[ParameterIdentity.Key(order[i].Parameter)]) result[name] = blob;
        }
        return result;
    }

    private static List<string> ParameterNames(StageRuntime stage) => stage.Module.named_parameters().Select(p => p.name).ToList();

    // Each parameter of stage s (by identity) and its names there: several when a parameter is tied within the stage.
    public static Dictionary<(IntPtr, string, ScalarType, string), List<string>> NamesByParameter(StageRuntime stage)
    {
        var result = new Dictionary<(IntPtr, string, ScalarType, string), List<string>>();
        foreach (var (name, p) in stage.Module.named_parameters())
        {
            var key = ParameterIdentity.Key(p);
            if (!result.TryGetValue(key, out var list)) result[key] = list = new List<string>();
            if (!list.Contains(name)) list.Add(name);
        }
        return result;
    }
}

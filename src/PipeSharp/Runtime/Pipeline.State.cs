using System.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

// The pipeline's state by model name (parameters, buffers, optimizer state), independent of how the model is split,
// so that a checkpoint saved with one number of stages loads into another.
public sealed partial class Pipeline
{
    private const string OptimizerBlobMagic = "PipeSharp.OptimizerState/1";

    /// <summary>
    /// Every parameter and buffer of the model under its model name (e.g. <c>block0.attn.c_attn.weight</c>), copied to
    /// the CPU. A tied parameter appears under each of its names, with identical values. Call between steps.
    /// </summary>
    /// <returns>New tensors, in model order; the caller disposes them.</returns>
    public IReadOnlyDictionary<string, Tensor> StateDict()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var result = new Dictionary<string, Tensor>();
        foreach (int s in LocalIndices)
            foreach (var (name, tensor) in StageStateDict(s))
                if (!result.ContainsKey(name)) result[name] = tensor;
                else tensor.Dispose();
        return result;
    }

    /// <summary>
    /// Copies <paramref name="state"/> (e.g. from <see cref="StateDict"/>, of any split of the same model) into every
    /// stage, and into every copy of a shared parameter, on each stage's device. Everything is checked first: on an
    /// error nothing has changed.
    /// </summary>
    /// <exception cref="ArgumentException">
    /// A name is missing or unexpected, a shape or type differs (the checkpoint is of another model config), or the
    /// names of one tied parameter have different values.
    /// </exception>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        CheckStateDict(state);
        using var noGrad = no_grad();
        foreach (var stage in LocalStages)
            foreach (var (name, target) in stage.Module.state_dict())
                target.copy_(state[name]);
    }

    /// <summary>
    /// Throws the <see cref="ArgumentException"/> that <see cref="LoadStateDict"/> would, without changing anything.
    /// </summary>
    public void CheckStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(state);
        var targets = LocalStages.SelectMany(s => s.Module.state_dict()).ToList();
        var names = targets.Select(t => t.Key).ToHashSet();
        var all = _stageStateNames.SelectMany(n => n).ToHashSet(); // with MPI, other processes load the other stages' names
        var missing = names.Where(n => !state.ContainsKey(n)).ToList();
        var unexpected = state.Keys.Where(n => !all.Contains(n)).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
            throw new ArgumentException(
                "the state does not fit this model" +
                (missing.Count > 0 ? $"; missing: {List(missing)}" : "") +
                (unexpected.Count > 0 ? $"; unexpected: {List(unexpected)}" : "") +
                ". The checkpoint was saved from a different model.", nameof(state));
        foreach (var (name, target) in targets)
        {
            var source = state[name];
            if (!source.shape.SequenceEqual(target.shape))
                throw new ArgumentException(
                    $"parameter {name} has shape [{string.Join(",", source.shape)}] in the checkpoint but " +
                    $"[{string.Join(",", target.shape)}] in the model: the checkpoint was saved from a different model config.", nameof(state));
            if (source.dtype != target.dtype)
                throw new ArgumentException(
                    $"parameter {name} has type {source.dtype} in the checkpoint but {target.dtype} in the model.", nameof(state));
        }
        using var scope = NewDisposeScope();
        foreach (var tied in TiedNames().Where(g => g.Count > 1))
            if (tied.Skip(1).FirstOrDefault(n => !(state[tied[0]] == state[n]).all().item<bool>()) is { } differing)
                throw new ArgumentException(
                    $"{tied[0]} and {differing} are one (tied) parameter in this model but have different values in the state.", nameof(state));
    }

    /// <summary>
    /// The optimizer state of every parameter (e.g. Adam's step count and moments, SGD's momentum buffer, and the
    /// options of its parameter group such as the learning rate), keyed by the parameter's model name like
    /// <see cref="StateDict"/>, so it can be loaded into a pipeline split differently. An optimizer that keeps no
    /// per-parameter state gets one entry per stage, <c>&lt;stage N optimizer&gt;</c>, which loads only into the same split.
    /// </summary>
    /// <exception cref="NotSupportedException">A stage's optimizer cannot save its state (it is implemented natively).</exception>
    public IReadOnlyDictionary<string, byte[]> OptimizerState()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var result = new Dictionary<string, byte[]>();
        foreach (int s in LocalIndices)
            foreach (var (name, blob) in StageOptimizerState(s))
                result.TryAdd(name, blob);
        return result;
    }

    /// <summary>
    /// Loads optimizer state from <see cref="OptimizerState"/> (of this or a differently split pipeline with the
    /// same optimizer). Every blob is checked first and a failure while loading restores the previous state, so on
    /// an error nothing has changed.
    /// </summary>
    /// <exception cref="ArgumentException">A parameter's state is missing or unexpected, or is of another optimizer or shape.</exception>
    /// <exception cref="NotSupportedException">A stage's optimizer cannot load state.</exception>
    public void LoadOptimizerState(IReadOnlyDictionary<string, byte[]> state)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(state);
        var plans = LocalIndices.Select(s => PlanOptimizerLoad(s, state)).ToList();
        var used = plans.SelectMany(p => p.Keys).ToHashSet();
        var known = _stageStateNames.SelectMany(n => n).ToHashSet();
        var unexpected = state.Keys.Where(k => !used.Contains(k) && !known.Contains(k)).ToList();
        if (unexpected.Count > 0)
            throw new ArgumentException($"optimizer state for parameters this model does not have: {List(unexpected)}.", nameof(state));

        var backups = LocalIndices.Select(StageOptimizerBackup).ToList();
        try
        {
            foreach (var plan in plans) plan.Apply();
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or EndOfStreamException)
        {
            foreach (var restore in backups) restore();
            throw new ArgumentException($"the optimizer state does not fit this model's optimizer ({e.Message}); nothing was changed.", nameof(state), e);
        }
    }

    // The state of stage s by model name, cloned to the CPU.
    internal Dictionary<string, Tensor> StageStateDict(int s)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var result = new Dictionary<string, Tensor>();
        foreach (var (name, t) in _stages[s]!.Module.state_dict())
        {
            using var scope = NewDisposeScope();
            result[name] = t.detach().cpu().clone().DetachFromDisposeScope();
        }
        return result;
    }

    // The optimizer state of stage s by parameter name (a parameter with several names in the stage under each).
    internal Dictionary<string, byte[]> StageOptimizerState(int s)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var (helper, order) = OptimizerLayout(s);
        var result = new Dictionary<string, byte[]>();
        var sd = helper.state_dict();
        if (order is null)
        {
            result[WholeOptimizerKey(s)] = WholeOptimizerBlob(helper, StageParameterNames(s));
            return result;
        }
        var names = NamesByParameter(s);
        for (int i = 0; i < order.Count; i++)
        {
            var blob = ParameterBlob(helper, sd.Options[order[i].Group], sd.State[i]);
            foreach (var name in names[ParameterIdentity.Key(order[i].Parameter)]) result[name] = blob;
        }
        return result;
    }

    // The optimizer of stage s and its parameters in state_dict() order with their group; null order if the optimizer
    // keeps no state per parameter.
    private (OptimizerHelper Helper, List<(int Group, Parameter Parameter)>? Order) OptimizerLayout(int s)
    {
        var optimizer = _stages[s]!.Optimizer;
        if (optimizer is not OptimizerHelper helper)
            throw new NotSupportedException(
                $"the optimizer of stage {s} ({optimizer.GetType().Name}) is implemented natively and cannot save or load its state; " +
                "use one of TorchSharp's managed optimizers (SGD, Adam, AdamW, ...).");
        var order = helper.ParamGroups.OfType<ParamGroup>()
            .SelectMany((g, gi) => g.Parameters.Select(p => (gi, p))).ToList();
        return (helper, order.Count == helper.state_dict().State.Count ? order : null);
    }

    // Checks the blobs for stage s and returns the names it uses and how to apply them.
    private (IReadOnlyList<string> Keys, Action Apply) PlanOptimizerLoad(int s, IReadOnlyDictionary<string, byte[]> state)
    {
        var (helper, order) = OptimizerLayout(s);
        string type = helper.GetType().Name;
        if (order is null)
        {
            string key = WholeOptimizerKey(s);
            if (!state.TryGetValue(key, out var whole))
                throw new ArgumentException(
                    $"{type} keeps no state per parameter, so its state cannot be re-split: the state has no entry '{key}'. " +
                    "Load it into a pipeline with the same stages and balance as it was saved with.", nameof(state));
            var (savedNames, payload) = ReadWholeOptimizerBlob(whole, key);
            if (!savedNames.SequenceEqual(StageParameterNames(s)))
                throw new ArgumentException(
                    $"{type} keeps no state per parameter, so its state cannot be re-split, and stage {s} now holds other parameters " +
                    "than when it was saved. Load it into a pipeline with the same stages and balance as it was saved with.", nameof(state));
            return (new[] { key }, () => helper.load_state_dict(new BinaryReader(new MemoryStream(payload))));
        }

        var names = NamesByParameter(s);
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
            var (savedType, options, payload) = ReadParameterBlob(state[name], name);
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
    private Action StageOptimizerBackup(int s)
    {
        var (helper, _) = OptimizerLayout(s);
        var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true)) helper.save_state_dict(writer);
        var bytes = stream.ToArray();
        return () => helper.load_state_dict(new BinaryReader(new MemoryStream(bytes)));
    }

    private static byte[] ParameterBlob(OptimizerHelper helper, OptimizerOptions options, TorchSharp.Modules.OptimizerState state)
    {
        var optionBytes = new MemoryStream();
        using (var w = new BinaryWriter(optionBytes, Encoding.UTF8, leaveOpen: true)) options.SaveStateDict(w);
        var stateBytes = new MemoryStream();
        using (var w = new BinaryWriter(stateBytes, Encoding.UTF8, leaveOpen: true)) state.SaveStateDict(w);
        var blob = new MemoryStream();
        using (var w = new BinaryWriter(blob, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(OptimizerBlobMagic);
            w.Write(helper.GetType().Name);
            w.Write((int)optionBytes.Length);
            w.Write(optionBytes.GetBuffer(), 0, (int)optionBytes.Length);
            w.Write((int)stateBytes.Length);
            w.Write(stateBytes.GetBuffer(), 0, (int)stateBytes.Length);
        }
        return blob.ToArray();
    }

    private static (string Type, byte[] Options, byte[] State) ReadParameterBlob(byte[] blob, string name)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(blob));
            if (r.ReadString() != OptimizerBlobMagic) throw new InvalidDataException("unknown format");
            var type = r.ReadString();
            var options = r.ReadBytes(r.ReadInt32());
            var state = r.ReadBytes(r.ReadInt32());
            if (r.BaseStream.Position != blob.Length) throw new InvalidDataException("trailing bytes");
            return (type, options, state);
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or IOException or ArgumentException)
        {
            throw new ArgumentException($"the optimizer state of {name} is not a PipeSharp per-parameter optimizer state ({e.Message}).", nameof(blob), e);
        }
    }

    private static byte[] WholeOptimizerBlob(OptimizerHelper helper, IReadOnlyList<string> names)
    {
        var blob = new MemoryStream();
        using (var w = new BinaryWriter(blob, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(OptimizerBlobMagic + "/whole");
            w.Write(names.Count);
            foreach (var n in names) w.Write(n);
            helper.save_state_dict(w);
        }
        return blob.ToArray();
    }

    private static (List<string> Names, byte[] Payload) ReadWholeOptimizerBlob(byte[] blob, string key)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(blob));
            if (r.ReadString() != OptimizerBlobMagic + "/whole") throw new InvalidDataException("unknown format");
            var names = Enumerable.Range(0, r.ReadInt32()).Select(_ => r.ReadString()).ToList();
            return (names, blob[(int)r.BaseStream.Position..]);
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or IOException)
        {
            throw new ArgumentException($"the optimizer state '{key}' is not a PipeSharp optimizer state ({e.Message}).", nameof(blob), e);
        }
    }

    private static string WholeOptimizerKey(int s) => $"<stage {s} optimizer>";

    private List<string> StageParameterNames(int s) => _stages[s]!.Module.named_parameters().Select(p => p.name).ToList();

    // Each parameter of stage s (by identity) and its names there: several when a parameter is tied within the stage.
    private Dictionary<(IntPtr, string, ScalarType, string), List<string>> NamesByParameter(int s)
    {
        var result = new Dictionary<(IntPtr, string, ScalarType, string), List<string>>();
        foreach (var (name, p) in _stages[s]!.Module.named_parameters())
        {
            var key = ParameterIdentity.Key(p);
            if (!result.TryGetValue(key, out var list)) result[key] = list = new List<string>();
            if (!list.Contains(name)) list.Add(name);
        }
        return result;
    }

    // The names that are one parameter of the model: tied within a stage, or copies of a shared parameter.
    private List<List<string>> TiedNames()
    {
        var byStage = LocalIndices.Select(NamesByParameter).ToList();
        var groups = byStage.SelectMany(d => d.Values).Select(l => l.ToList()).ToList();
        foreach (var shared in _replicas[0].Shared.Groups)
        {
            var names = shared.Names.ToHashSet();
            var merged = groups.Where(g => g.Any(names.Contains)).ToList();
            foreach (var g in merged) groups.Remove(g);
            groups.Add(merged.SelectMany(g => g).Concat(shared.Names).Distinct().ToList());
        }
        return groups;
    }

    private IEnumerable<int> LocalIndices => LocalStages.Select(s => s.Module.Index);

    private static string List(IReadOnlyList<string> names) =>
        string.Join(", ", names.Take(8)) + (names.Count > 8 ? $" and {names.Count - 8} more" : "");
}

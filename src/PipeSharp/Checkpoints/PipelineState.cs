using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Checkpoints;

/// <summary>
/// A pipeline's state by model name (parameters, buffers, optimizer state), independent of how the model is cut, so
/// that a checkpoint saved with one number of stages loads into another. Call these between steps; across processes
/// each process gets and loads the state of the stages it holds.
/// </summary>
public static class PipelineState
{
    /// <summary>
    /// Every parameter and buffer of the model under its model name (e.g. <c>block0.attn.c_attn.weight</c>), copied to
    /// the CPU. A tied parameter appears under each of its names, with identical values. Call between steps.
    /// </summary>
    /// <returns>New tensors, in model order; the caller disposes them.</returns>
    public static IReadOnlyDictionary<string, Tensor> StateDict(this Pipeline pipe)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        pipe.ThrowIfDisposed();
        var result = new Dictionary<string, Tensor>();
        foreach (var stage in pipe.LocalStages)
            foreach (var (name, tensor) in pipe.StageStateDict(stage.Module.Index))
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
    public static void LoadStateDict(this Pipeline pipe, IReadOnlyDictionary<string, Tensor> state)
    {
        pipe.CheckStateDict(state);
        using var noGrad = no_grad();
        foreach (var stage in pipe.LocalStages)
            foreach (var (name, target) in stage.Module.state_dict())
                target.copy_(state[name]);
    }

    /// <summary>
    /// Throws the <see cref="ArgumentException"/> that <see cref="LoadStateDict"/> would, without changing anything.
    /// </summary>
    public static void CheckStateDict(this Pipeline pipe, IReadOnlyDictionary<string, Tensor> state)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        pipe.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(state);
        var targets = pipe.LocalStages.SelectMany(s => s.Module.state_dict()).ToList();
        var names = targets.Select(t => t.Key).ToHashSet();
        var known = KnownNames(pipe); // with MPI, other processes load the other stages' names
        var missing = names.Where(n => !state.ContainsKey(n)).ToList();
        var unexpected = state.Keys.Where(n => !known(n)).ToList();
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
        foreach (var tied in TiedNames(pipe).Select(g => g.Where(state.ContainsKey).ToList()).Where(g => g.Count > 1))
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
    public static IReadOnlyDictionary<string, byte[]> OptimizerState(this Pipeline pipe)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        pipe.ThrowIfDisposed();
        var result = new Dictionary<string, byte[]>();
        foreach (var stage in pipe.LocalStages)
            foreach (var (name, blob) in StageOptimizers.Save(stage))
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
    public static void LoadOptimizerState(this Pipeline pipe, IReadOnlyDictionary<string, byte[]> state)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        pipe.ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(state);
        var plans = pipe.LocalStages.Select(s => StageOptimizers.PlanLoad(s, state)).ToList();
        var used = plans.SelectMany(p => p.Keys).ToHashSet();
        var known = KnownNames(pipe);
        var unexpected = state.Keys.Where(k => !used.Contains(k) && !known(k)).ToList();
        if (unexpected.Count > 0)
            throw new ArgumentException($"optimizer state for parameters this model does not have: {List(unexpected)}.", nameof(state));

        var backups = pipe.LocalStages.Select(StageOptimizers.Backup).ToList();
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
    internal static Dictionary<string, byte[]> StageOptimizerState(this Pipeline pipe, int s)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        pipe.ThrowIfDisposed();
        return StageOptimizers.Save(pipe.Replicas[0].Stages[s]!);
    }

    // The state of stage s by model name, cloned to the CPU.
    internal static Dictionary<string, Tensor> StageStateDict(this Pipeline pipe, int s)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        pipe.ThrowIfDisposed();
        var result = new Dictionary<string, Tensor>();
        foreach (var (name, t) in pipe.Replicas[0].Stages[s]!.Module.state_dict())
        {
            using var scope = NewDisposeScope();
            result[name] = t.detach().cpu().clone().DetachFromDisposeScope();
        }
        return result;
    }

    // Whether a name is one of the model's parameters or buffers. A pipeline built from a spec knows the names of the
    // stages it holds only: a name of a layer of another process's stage is taken as known (that process checks it).
    private static Func<string, bool> KnownNames(Pipeline pipe)
    {
        var all = pipe.StageStateNames.Where(n => n != null).SelectMany(n => n!).ToHashSet();
        if (pipe.StageStateNames.All(n => n != null) || pipe.LayerNames is not { } layerNames) return all.Contains;
        var elsewhere = new HashSet<string>();
        for (int s = 0, layer = 0; s < pipe.Balance.Count; layer += pipe.Balance[s], s++)
            if (pipe.StageStateNames[s] is null)
                for (int k = 0; k < pipe.Balance[s]; k++) elsewhere.Add(layerNames[layer + k]);
        return name => all.Contains(name) || (name.IndexOf('.') is var dot and > 0 && elsewhere.Contains(name[..dot]));
    }

    // The names that are one parameter of the model: tied within a stage, or copies of a shared parameter.
    private static List<List<string>> TiedNames(Pipeline pipe)
    {
        var byStage = pipe.LocalStages.Select(StageOptimizers.NamesByParameter).ToList();
        var groups = byStage.SelectMany(d => d.Values).Select(l => l.ToList()).ToList();
        foreach (var shared in pipe.Replicas[0].Shared.Groups)
        {
            var names = shared.Names.ToHashSet();
            var merged = groups.Where(g => g.Any(names.Contains)).ToList();
            foreach (var g in merged) groups.Remove(g);
            groups.Add(merged.SelectMany(g => g).Concat(shared.Names).Distinct().ToList());
        }
        return groups;
    }

    private static string List(IReadOnlyList<string> names) =>
        string.Join(", ", names.Take(8)) + (names.Count > 8 ? $" and {names.Count - 8} more" : "");
}

using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Makes a second run of a segment's forward (a recomputation, or the run that learns which outputs carry a gradient)
/// repeat the first and leave no trace. It starts the CPU generator from the state the first run started from and
/// afterwards puts back the state it found, so the re-run draws the same dropout masks and the draws that follow are
/// those a run without recomputation makes. And BatchNorm's running statistics are updated once per micro-batch, by
/// the first run only: during the re-run every BatchNorm (and instance norm) of the segment does not track them (it
/// normalises by the micro-batch's statistics, as in any training forward, and neither reads nor updates the running
/// ones); the buffers of other modules are copied before and put back after.
/// </summary>
/// <remarks>
/// Until dropout masks are keyed by (seed, step, layer, sample), restoring the generator is what makes a re-run
/// reproduce the original forward's randomness. It covers TorchSharp's global CPU generator, which CPU dropout draws
/// from; TorchSharp 0.107 has no call that reads or sets a CUDA device's generator state, so a CUDA stage's recomputed
/// dropout draws new masks. Ranks that are threads of one process share the CPU generator: their draws interleave in
/// whatever order the threads run, with recomputation or without, so dropout is reproducible only with one rank per
/// process (or one rank in all). Running statistics are switched off rather than copied back because a BatchNorm's
/// graph keeps them, and putting values back in place would make that graph's backward refuse them as modified.
/// </remarks>
internal sealed class RerunGuard : IDisposable
{
    // TorchSharp's BatchNorm reads track_running_stats on every forward, but its setter is private.
    private static readonly MethodInfo? SetTracking =
        typeof(NormBase).GetProperty(nameof(NormBase.track_running_stats))?.GetSetMethod(nonPublic: true);

    private readonly Tensor _found;
    private readonly List<NormBase> _untracked = new();
    private readonly List<(Tensor Buffer, Tensor Copy)> _buffers = new();

    /// <param name="startFrom">The generator state the first run started from (null: the run starts from the current state).</param>
    /// <param name="modules">Every module the run goes through.</param>
    public RerunGuard(Tensor? startFrom, IEnumerable<nn.Module> modules)
    {
        _found = torch.get_rng_state().DetachFromDisposeScope();
        if (startFrom is not null) torch.set_rng_state(startFrom);
        using var noGrad = torch.no_grad();
        foreach (var module in modules)
        {
            if (module is NormBase norm && SetTracking is not null)
            {
                if (!norm.track_running_stats) continue;
                SetTracking.Invoke(norm, [false]);
                _untracked.Add(norm);
                continue;
            }
            foreach (var (_, buffer) in module.named_buffers(recurse: false)) _buffers.Add((buffer, buffer.clone().DetachFromDisposeScope()));
        }
    }

    public void Dispose()
    {
        torch.set_rng_state(_found);
        _found.Dispose();
        foreach (var norm in _untracked) SetTracking!.Invoke(norm, [true]);
        using var noGrad = torch.no_grad();
        foreach (var (buffer, copy) in _buffers)
        {
            buffer.copy_(copy);
            copy.Dispose();
        }
    }
}

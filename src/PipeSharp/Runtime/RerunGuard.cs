using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Makes a second run of a segment's forward (a recomputation, or the run that learns which outputs carry a gradient)
/// repeat the first and leave no trace: it starts the CPU generator from the state the first run started from and
/// afterwards puts back the state it found, so the re-run draws the same dropout masks and the draws that follow are
/// those a run without recomputation would make; and it puts every buffer of the segment's layers back as it was, so a
/// BatchNorm's running statistics are updated once per micro-batch, by the first run, not again by the re-run.
/// </summary>
/// <remarks>
/// Until dropout masks are keyed by (seed, step, layer, sample), this is what makes a re-run reproduce the original
/// forward's randomness. It covers TorchSharp's global CPU generator, which CPU dropout draws from; TorchSharp 0.107 has
/// no call that reads or sets a CUDA device's generator state, so a CUDA stage's recomputed dropout draws new masks.
/// Ranks that are threads of one process share the CPU generator: their draws interleave in whatever order the threads
/// run, with recomputation or without, so dropout is reproducible only with one rank per process (or one rank).
/// </remarks>
internal sealed class RerunGuard : IDisposable
{
    private readonly Tensor _found;
    private readonly List<(Tensor Buffer, Tensor Copy)> _buffers;

    /// <param name="startFrom">The generator state the first run started from (null: the run starts from the current state).</param>
    /// <param name="buffers">The buffers the run may change.</param>
    public RerunGuard(Tensor? startFrom, IEnumerable<Tensor> buffers)
    {
        _found = torch.get_rng_state().DetachFromDisposeScope();
        if (startFrom is not null) torch.set_rng_state(startFrom);
        using var noGrad = torch.no_grad();
        _buffers = buffers.Select(b => (b, b.clone().DetachFromDisposeScope())).ToList();
    }

    public void Dispose()
    {
        torch.set_rng_state(_found);
        _found.Dispose();
        using var noGrad = torch.no_grad();
        foreach (var (buffer, copy) in _buffers)
        {
            buffer.copy_(copy);
            copy.Dispose();
        }
    }
}

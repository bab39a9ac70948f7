using static TorchSharp.torch;

namespace PipeSharp.Mpi;

/// <summary>
/// What a receiver knows of one shape slot of a channel (peer, kind, stage): the shape and dtype its header announced,
/// the size in bytes, worked out once, and for small messages a spare tensor made ahead of need. Creating a tensor
/// costs close to a microsecond, as much as moving 64 KB between processes takes a tenth of; with a spare, a message
/// that arrives is received at once, and the next spare is made while the receiver has nothing else to do.
/// </summary>
/// <remarks>Used under the MPI engine's progress lock only (by <see cref="MpiTransport"/>'s poller).</remarks>
internal sealed class ReceiveSlot
{
    /// <summary>Messages up to this size get a spare tensor; above it the tensor's cost is lost in the transfer time.</summary>
    public const long SpareLimitBytes = 1 << 20;

    /// <summary>The bit of a header's dtype entry that says the tensor was sent with <c>requires_grad</c>.</summary>
    public const long RequiresGradFlag = 1L << 32;

    private Tensor? _spare;

    private ReceiveSlot(long[] shape, ScalarType dtype, long elementSize, long bytes, bool requiresGrad)
    {
        RequiresGrad = requiresGrad;
        Shape = shape;
        Dtype = dtype;
        ElementSize = elementSize;
        Bytes = bytes;
    }

    public long[] Shape { get; }
    public ScalarType Dtype { get; }

    /// <summary>Whether the messages of this slot were sent with <c>requires_grad</c> (and are delivered so).</summary>
    public bool RequiresGrad { get; }
    public long ElementSize { get; }

    /// <summary>The size of one message in this slot.</summary>
    public long Bytes { get; }

    /// <summary>False once a new header has taken the slot over (a later message has another shape).</summary>
    public bool Current { get; private set; } = true;

    /// <summary>The slot of a header: kind, channel, slot, dtype (and the requires_grad flag), then the dimensions.</summary>
    public static ReceiveSlot FromHeader(long[] header, Func<ScalarType, long> elementSizeOf)
    {
        var dtype = (ScalarType)(header[3] & ~RequiresGradFlag);
        long elementSize = elementSizeOf(dtype), bytes = elementSize;
        var shape = header[4..];
        foreach (long d in shape) bytes *= d;
        return new ReceiveSlot(shape, dtype, elementSize, bytes, (header[3] & RequiresGradFlag) != 0);
    }

    /// <summary>
    /// A tensor to receive the next message into, outside any dispose scope: the spare if there is one, else a new
    /// one. Returns whether the slot wants a new spare (<see cref="Refill"/>).
    /// </summary>
    public Tensor Take(out bool wantsSpare)
    {
        var tensor = _spare ?? ReceiveBuffers.Rent(Shape, Dtype, ElementSize);
        _spare = null;
        wantsSpare = Current && Bytes <= SpareLimitBytes;
        return tensor;
    }

    /// <summary>Makes the spare tensor if the slot is still current and has none.</summary>
    public void Refill()
    {
        if (Current && _spare is null) _spare = ReceiveBuffers.Rent(Shape, Dtype, ElementSize);
    }

    /// <summary>The slot was taken over by another shape (or the transport closes): frees the spare.</summary>
    public void Retire()
    {
        Current = false;
        _spare?.Dispose();
        _spare = null;
    }
}

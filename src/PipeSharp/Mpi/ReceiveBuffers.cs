using PipeSharp.Native;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Mpi;

/// <summary>
/// Memory for received messages that is used again. Every message is received into a new tensor (the runtime keeps a
/// received activation until the backward), and a large new tensor costs fresh pages from the kernel: faulting in
/// 64 MB takes longer than moving it between processes. A large message is therefore received into a block of this
/// pool, wrapped as a tensor whose storage gives the block back when libtorch frees it (its reference count reaches
/// zero, whatever views or aliases there were), so the next message of that size lands in memory already mapped.
/// </summary>
internal static class ReceiveBuffers
{
    /// <summary>
    /// Smaller messages come from the C library's allocator, which reuses small blocks well by itself. From a
    /// megabyte up it does not reliably: glibc gives the top of its heap back to the kernel once more than twice its
    /// mmap threshold is free there, so a 4 MB message lands in fresh pages in some stretches and not in others
    /// (measured at 4 MB: the transport at medians of 0.76-0.84 of raw MPI with malloc, 0.91-0.99 with this pool).
    /// </summary>
    public const long MinimumBytes = 1 << 20;

    /// <summary>Most memory kept for reuse; a block given back beyond it is freed.</summary>
    public const long MaximumPooledBytes = 1L << 30;

    private static readonly ConcurrentDictionary<long, ConcurrentBag<IntPtr>> Free = new();
    private static readonly ConcurrentDictionary<IntPtr, long> Sizes = new();
    private static long _pooled;

    // Called by libtorch when a tensor's storage is released; kept alive for the life of the process.
    private static readonly TensorMemory.Deleter GiveBack = Return;

    /// <summary>An uninitialised CPU tensor of <paramref name="shape"/> and <paramref name="dtype"/>, outside any dispose scope.</summary>
    public static unsafe Tensor Rent(long[] shape, ScalarType dtype, long elementSize)
    {
        long bytes = elementSize;
        foreach (long d in shape) bytes *= d;
        if (bytes < MinimumBytes) return torch.empty(shape, dtype).DetachFromDisposeScope();

        IntPtr block = Free.TryGetValue(bytes, out var bag) && bag.TryTake(out var reused) ? reused : IntPtr.Zero;
        if (block != IntPtr.Zero) Interlocked.Add(ref _pooled, -bytes);
        else
        {
            block = (IntPtr)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            Sizes[block] = bytes;
        }
        try
        {
            return TensorMemory.Wrap(block, shape, dtype, GiveBack);
        }
        catch
        {
            Return(block);
            throw;
        }
    }

    /// <summary>Bytes held for reuse right now (for tests).</summary>
    public static long PooledBytes => Interlocked.Read(ref _pooled);

    private static unsafe void Return(IntPtr block)
    {
        long bytes = Sizes[block];
        if (Interlocked.Add(ref _pooled, bytes) <= MaximumPooledBytes)
        {
            Free.GetOrAdd(bytes, _ => new ConcurrentBag<IntPtr>()).Add(block);
            return;
        }
        Interlocked.Add(ref _pooled, -bytes);
        Sizes.TryRemove(block, out _);
        NativeMemory.AlignedFree((void*)block);
    }
}

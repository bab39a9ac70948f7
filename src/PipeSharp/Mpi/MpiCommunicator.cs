using PipeSharp.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Mpi;

/// <summary>
/// An MPI communicator (a group of ranks) with the non-blocking collectives the pipeline needs, on CPU tensors'
/// native memory. Each returns an operation to wait for; every rank of the group must start the same collectives
/// in the same order (they do: each rank runs the same code path, and the engine starts them in queue order).
/// </summary>
internal sealed class MpiCommunicator
{
    private readonly MpiEngine _engine;

    private MpiCommunicator(MpiEngine engine, int handle, int rank, int size)
    {
        _engine = engine;
        Handle = handle;
        Rank = rank;
        Size = size;
    }

    public int Handle { get; }
    public int Rank { get; }
    public int Size { get; }

    /// <summary>
    /// Splits MPI_COMM_WORLD (collective over all ranks): ranks with the same <paramref name="color"/> form a group,
    /// ordered by <paramref name="key"/>. A rank with a negative color joins none and gets null.
    /// </summary>
    public static MpiCommunicator? Split(MpiEngine engine, int color, int key)
    {
        var (handle, rank, size) = engine.Call(() =>
        {
            MpiNative.Check(MpiNative.MPI_Comm_split(MpiNative.CommWorld, color < 0 ? MpiNative.Undefined : color, key, out int comm), "MPI_Comm_split");
            if (comm == MpiNative.CommNull) return (comm, -1, 0);
            MpiNative.Check(MpiNative.MPI_Comm_rank(comm, out int r), "MPI_Comm_rank");
            MpiNative.Check(MpiNative.MPI_Comm_size(comm, out int s), "MPI_Comm_size");
            return (comm, r, s);
        });
        return handle == MpiNative.CommNull ? null : new MpiCommunicator(engine, handle, rank, size);
    }

    /// <summary>Sums <paramref name="buffer"/> over the group, in place.</summary>
    public MpiOperation AllReduceSum(Tensor buffer) => Start(buffer, () =>
    {
        MpiNative.Check(MpiNative.MPI_Iallreduce(MpiNative.InPlace, TensorMemory.Pointer(buffer), (int)buffer.NumberOfElements,
            DataType(buffer), MpiNative.OpSum, Handle, out int request), "MPI_Iallreduce");
        return [request];
    });

    /// <summary>Gathers every rank's <paramref name="send"/> into <paramref name="receive"/>, in group-rank order.</summary>
    public MpiOperation AllGather(Tensor send, Tensor receive) => Start(send, () =>
    {
        int count = (int)send.NumberOfElements;
        MpiNative.Check(MpiNative.MPI_Iallgather(TensorMemory.Pointer(send), count, DataType(send),
            TensorMemory.Pointer(receive), count, DataType(receive), Handle, out int request), "MPI_Iallgather");
        return [request];
    });

    /// <summary>Copies group rank <paramref name="root"/>'s <paramref name="buffer"/> to every rank of the group.</summary>
    public MpiOperation Broadcast(Tensor buffer, int root) => Start(buffer, () =>
    {
        long bytes = buffer.NumberOfElements * buffer.ElementSize;
        MpiNative.Check(MpiNative.MPI_Ibcast(TensorMemory.Pointer(buffer), checked((int)bytes), MpiNative.Byte, root, Handle, out int request), "MPI_Ibcast");
        return [request];
    });

    private MpiOperation Start(Tensor buffer, Func<int[]> start)
    {
        if (buffer.device_type != DeviceType.CPU || !buffer.is_contiguous())
            throw new ArgumentException("MPI collectives work on contiguous CPU tensors.", nameof(buffer));
        return _engine.Submit(new RequestOperation(start));
    }

    private static int DataType(Tensor t) => t.dtype switch
    {
        ScalarType.Float32 => MpiNative.Float,
        ScalarType.Float64 => MpiNative.Double,
        ScalarType.Int64 => MpiNative.Int64,
        _ => throw new NotSupportedException($"MPI reductions of {t.dtype} tensors are not supported; use float32 or float64."),
    };
}

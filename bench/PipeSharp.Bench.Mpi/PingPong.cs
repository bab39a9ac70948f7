using PipeSharp.Native;
using System.Diagnostics;
using PipeSharp.Mpi;
using PipeSharp.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Bench.Mpi;

/// <summary>
/// Ping-pong between ranks 0 and 1: rank 0 sends a message, rank 1 sends it back, <c>iterations</c> times after one
/// untimed exchange (which also absorbs the two ranks arriving at slightly different times). Both variants return
/// rank 0's seconds for the timed exchanges; rank 1's figure is not used.
/// </summary>
internal static class PingPong
{
    private const int Tag = 7;

    /// <summary>
    /// Raw MPI: the whole loop is one <see cref="MpiEngine.Call{T}"/> (MPI to itself, no other thread touches it
    /// meanwhile), on its own communicator, into buffers allocated once. Receives are matched probes and receives
    /// (MPI_Improbe, then MPI_Imrecv), as the transport receives, because PipeSharp binds no MPI_Irecv; the loop polls
    /// without pause, so this is as fast as MPI goes from .NET.
    /// </summary>
    public static double Raw(MpiEngine engine, int comm, int rank, Tensor first, Tensor second, int bytes, int iterations)
    {
        IntPtr a = TensorMemory.Pointer(first), b = TensorMemory.Pointer(second);
        int peer = 1 - rank;
        return engine.Call(() =>
        {
            Exchange(comm, rank, peer, ref a, ref b, bytes);
            long start = Stopwatch.GetTimestamp();
            for (int i = 0; i < iterations; i++) Exchange(comm, rank, peer, ref a, ref b, bytes);
            return Stopwatch.GetElapsedTime(start).TotalSeconds;
        });
    }

    /// <summary>
    /// Raw MPI as <see cref="Raw"/>, but every message is received into a newly allocated tensor (and the previous one
    /// freed), as a pipeline must: a received activation is kept for the backward. This separates what fresh receive
    /// buffers cost from what the transport itself adds.
    /// </summary>
    public static double RawFresh(MpiEngine engine, int comm, int rank, int bytes, int iterations)
    {
        int peer = 1 - rank;
        long count = bytes / sizeof(float);
        return engine.Call(() =>
        {
            var held = torch.zeros(count).DetachFromDisposeScope();
            void One()
            {
                var fresh = torch.empty(count).DetachFromDisposeScope();
                if (rank == 0)
                {
                    MpiNative.Check(MpiNative.MPI_Isend(TensorMemory.Pointer(held), bytes, MpiNative.Byte, peer, Tag, comm, out int send), "MPI_Isend");
                    Receive(comm, peer, TensorMemory.Pointer(fresh), bytes);
                    Complete(ref send);
                }
                else
                {
                    Receive(comm, peer, TensorMemory.Pointer(fresh), bytes);
                    MpiNative.Check(MpiNative.MPI_Isend(TensorMemory.Pointer(fresh), bytes, MpiNative.Byte, peer, Tag, comm, out int send), "MPI_Isend");
                    Complete(ref send);
                }
                held.Dispose();
                held = fresh;
            }
            One();
            long start = Stopwatch.GetTimestamp();
            for (int i = 0; i < iterations; i++) One();
            double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            held.Dispose();
            return seconds;
        });
    }

    // Rank 0 sends from a and receives the reply into b, then swaps them (a buffer is never received into while a
    // send from it may still be in flight); rank 1 receives into a and sends it back from a.
    private static void Exchange(int comm, int rank, int peer, ref IntPtr a, ref IntPtr b, int bytes)
    {
        if (rank == 0)
        {
            MpiNative.Check(MpiNative.MPI_Isend(a, bytes, MpiNative.Byte, peer, Tag, comm, out int send), "MPI_Isend");
            Receive(comm, peer, b, bytes);
            Complete(ref send);
            (a, b) = (b, a);
        }
        else
        {
            Receive(comm, peer, a, bytes);
            MpiNative.Check(MpiNative.MPI_Isend(a, bytes, MpiNative.Byte, peer, Tag, comm, out int send), "MPI_Isend");
            Complete(ref send);
        }
    }

    private static void Receive(int comm, int peer, IntPtr buffer, int bytes)
    {
        int found, message;
        do MpiNative.Check(MpiNative.MPI_Improbe(peer, Tag, comm, out found, out message, out _), "MPI_Improbe");
        while (found == 0);
        MpiNative.Check(MpiNative.MPI_Imrecv(buffer, bytes, MpiNative.Byte, ref message, out int request), "MPI_Imrecv");
        Complete(ref request);
    }

    private static void Complete(ref int request) => MpiNative.Complete(ref request);

    /// <summary>
    /// Through <see cref="MpiTransport"/>, as the pipeline uses it: rank 0 sends a float32 tensor as an activation for
    /// stage 1 and waits for the "gradient" for stage 0; rank 1 receives and sends the very tensor it received back.
    /// Send gives the tensor to the transport (it is disposed once sent) and every receive allocates a new one, as in
    /// a training step; the waits are on this (main) thread, which polls MPI itself while it waits.
    /// </summary>
    public static double Transport(MpiTransport transport, int rank, int bytes, int iterations)
    {
        var there = new MessageKey(MessageKind.Activation, 1, 0);
        var back = new MessageKey(MessageKind.Gradient, 0, 0);
        if (rank == 1)
        {
            for (int i = 0; i <= iterations; i++) transport.Send(back, transport.Receive(there, CancellationToken.None));
            return double.NaN;
        }
        var tensor = torch.zeros(bytes / sizeof(float), ScalarType.Float32);
        transport.Send(there, tensor);
        tensor = transport.Receive(back, CancellationToken.None);
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < iterations; i++)
        {
            transport.Send(there, tensor);
            tensor = transport.Receive(back, CancellationToken.None);
        }
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        tensor.Dispose();
        return seconds;
    }
}

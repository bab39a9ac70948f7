using System.Runtime.InteropServices;

namespace PipeSharp.Mpi;

/// <summary>
/// The few MPI functions PipeSharp calls, bound directly to MPICH's C library (<c>libmpich.so.12</c>) with MPICH's
/// handle values. Every call is made in a turn of <see cref="MpiEngine"/>, which serialises them.
/// </summary>
/// <remarks>
/// MPI.NET 1.4.0, the only MPI package on NuGet, is built for MS-MPI and has no MPI-3 calls (matched probe,
/// non-blocking collectives), which the transport and the overlapped gradient all-reduce need; so these are bound here.
/// </remarks>
internal static class MpiNative
{
    public const string Library = "libmpich.so.12";

    public const int Success = 0;
    public const int CommWorld = 0x44000000;
    public const int CommNull = 0x04000000;
    public const int RequestNull = 0x2c000000;
    public const int MessageNoProc = 0x6c000000;
    public const int Byte = 0x4c00010d;
    public const int Float = 0x4c00040a;
    public const int Double = 0x4c00080b;
    public const int Int64 = 0x4c00083a;
    public const int OpSum = 0x58000003;
    public const int OpMax = 0x58000001;
    public const int TagUpperBoundKey = 0x64400001;
    public const int ErrorsReturn = 0x54000001;
    public const int AnySource = -2;
    public const int AnyTag = -1;
    public const int Undefined = -32766;
    public const int ThreadFunneled = 1;
    public const int ThreadSerialized = 2;
    public static readonly IntPtr InPlace = new(-1);

    /// <summary>MPICH's MPI_Status.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Status
    {
        public int CountLow;
        public int CountHighAndCancelled;
        public int Source;
        public int Tag;
        public int Error;
    }

    [DllImport(Library)] public static extern int MPI_Initialized(out int flag);
    [DllImport(Library)] public static extern int MPI_Finalized(out int flag);
    [DllImport(Library)] public static extern int MPI_Init_thread(IntPtr argc, IntPtr argv, int required, out int provided);
    [DllImport(Library)] public static extern int MPI_Finalize();
    [DllImport(Library)] public static extern int MPI_Abort(int comm, int errorCode);
    [DllImport(Library)] public static extern int MPI_Comm_rank(int comm, out int rank);
    [DllImport(Library)] public static extern int MPI_Comm_size(int comm, out int size);
    [DllImport(Library)] public static extern int MPI_Comm_dup(int comm, out int newComm);
    [DllImport(Library)] public static extern int MPI_Comm_split(int comm, int color, int key, out int newComm);
    [DllImport(Library)] public static extern int MPI_Comm_free(ref int comm);
    [DllImport(Library)] public static extern int MPI_Comm_get_attr(int comm, int key, out IntPtr value, out int flag);
    [DllImport(Library)] public static extern int MPI_Comm_set_errhandler(int comm, int handler);
    [DllImport(Library)] public static extern int MPI_Isend(IntPtr buffer, int count, int datatype, int dest, int tag, int comm, out int request);
    [DllImport(Library)] public static extern int MPI_Test(ref int request, out int flag, out Status status);
    [DllImport(Library)] public static extern int MPI_Request_free(ref int request);
    [DllImport(Library)] public static extern int MPI_Improbe(int source, int tag, int comm, out int flag, out int message, out Status status);
    [DllImport(Library)] public static extern int MPI_Imrecv(IntPtr buffer, int count, int datatype, ref int message, out int request);
    [DllImport(Library)] public static extern int MPI_Get_count(ref Status status, int datatype, out int count);
    [DllImport(Library)] public static extern int MPI_Iallreduce(IntPtr send, IntPtr receive, int count, int datatype, int op, int comm, out int request);
    [DllImport(Library)] public static extern int MPI_Ibcast(IntPtr buffer, int count, int datatype, int root, int comm, out int request);
    [DllImport(Library)] public static extern int MPI_Ibarrier(int comm, out int request);
    [DllImport(Library)] public static extern int MPI_Iallgather(IntPtr send, int sendCount, int sendType, IntPtr receive, int receiveCount, int receiveType, int comm, out int request);
    [DllImport(Library)] public static extern int MPI_Error_string(int code, byte[] text, out int length);
    [DllImport(Library)] public static extern int MPI_Get_processor_name(byte[] name, out int length);

    /// <summary>
    /// Tests <paramref name="request"/> until it completes: only for requests that complete at once or nearly (a small
    /// message already matched, a start-up collective), never for waits on another rank's progress in a step.
    /// </summary>
    public static void Complete(ref int request)
    {
        int done;
        do Check(MPI_Test(ref request, out done, out _), "MPI_Test"); while (done == 0);
    }

    /// <summary>
    /// Receives a matched message (from <c>MPI_Improbe</c>) of <paramref name="bytes"/> bytes into
    /// <paramref name="buffer"/> now: for small messages only (headers, heartbeats, notices), which are complete at once.
    /// </summary>
    public static void ReceiveNow(Array buffer, int bytes, ref int message)
    {
        var handle = GCHandle.Alloc(buffer, GCHandleType.Pinned);
        try
        {
            Check(MPI_Imrecv(handle.AddrOfPinnedObject(), bytes, Byte, ref message, out int request), "MPI_Imrecv");
            Complete(ref request);
        }
        finally
        {
            handle.Free();
        }
    }

    /// <summary>Throws <see cref="MpiException"/> for an MPI error code.</summary>
    public static void Check(int code, string call)
    {
        if (code == Success) return;
        var text = new byte[512];
        string message = MPI_Error_string(code, text, out int length) == Success
            ? System.Text.Encoding.ASCII.GetString(text, 0, length)
            : $"error {code}";
        throw new MpiException($"{call} failed: {message}");
    }
}

using System.Runtime.InteropServices;

namespace PipeSharp.Tracing;

/// <summary>
/// Bytes of native heap in use by the process, from glibc's <c>mallinfo2</c> (small blocks plus mmap'd large
/// ones), which is where libtorch's CPU tensors live. Null where that call does not exist (not glibc Linux).
/// </summary>
internal static class NativeHeap
{
    [StructLayout(LayoutKind.Sequential)]
    private struct MallInfo2
    {
        public nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }

    [DllImport("libc", EntryPoint = "mallinfo2")]
    private static extern MallInfo2 Native();

    private static readonly bool Available = OperatingSystem.IsLinux() && Probe();

    private static bool Probe()
    {
        try { Native(); return true; }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException) { return false; }
    }

    /// <summary>Bytes allocated and not freed, or null if this platform cannot tell.</summary>
    public static long? BytesInUse()
    {
        if (!Available) return null;
        var info = Native();
        return (long)(info.Uordblks + info.Hblkhd);
    }
}

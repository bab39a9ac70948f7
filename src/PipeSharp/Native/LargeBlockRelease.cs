using System.Runtime.InteropServices;

namespace PipeSharp.Native;

/// <summary>
/// Makes glibc give a freed large block (a tensor's storage) back to the system at once. By default glibc raises its
/// mmap threshold each time a large mmap'd block is freed (up to 32 MB), after which blocks of that size come from the
/// heap and stay with the process when freed: training then grew a process by about one copy of its parameters per
/// step (a GPT of 25M parameters: 2.9 GB resident after 20 steps, with 0.5 GB in use), which under a memory cap
/// the kernel enforces killed ranks whose prediction fitted. Fixing the threshold at glibc's initial 128 KiB (which
/// also stops its adjustment) keeps a process at what it uses, but every large tensor then comes fresh from the
/// system: a training step of the benchmark GPT took 1.2-1.3x as long with it (1 rank and 2 ranks, measured side by
/// side). So it is applied once a pipeline has a memory budget (PipelineOptions.MemoryPerDevice),
/// where staying under the budget is what the user asked for, and for the rest of the process; nothing on other C
/// libraries.
/// </summary>
internal static class LargeBlockRelease
{
    /// <summary>glibc's initial mmap threshold: blocks of this size and larger are mmap'd and unmapped when freed.</summary>
    public const int ThresholdBytes = 128 * 1024;

    private const int MmapThreshold = -3; // M_MMAP_THRESHOLD in malloc.h

    [DllImport("libc", EntryPoint = "mallopt")]
    private static extern int MallOpt(int parameter, int value);

    private static readonly Lazy<bool> Outcome = new(Apply);

    /// <summary>Applies the threshold (once); whether it is in force (false where the C library is not glibc).</summary>
    public static bool EnsureApplied() => Outcome.Value;

    private static bool Apply()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try { return MallOpt(MmapThreshold, ThresholdBytes) == 1; }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException) { return false; }
    }
}

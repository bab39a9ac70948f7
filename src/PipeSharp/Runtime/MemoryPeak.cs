using PipeSharp.Tracing;

namespace PipeSharp.Runtime;

/// <summary>
/// The largest native heap of this process seen during a step, sampled by every rank's worker after each of its
/// actions and once after the optimizer step. Ranks that are threads of one process share the heap, so in one
/// process this is the peak of all its ranks together; under MPI, of the one rank the process runs.
/// </summary>
internal sealed class MemoryPeak
{
    private long _peak = long.MinValue;

    /// <summary>The largest heap seen, or null if this platform cannot read it (or nothing was sampled).</summary>
    public long? Bytes => Interlocked.Read(ref _peak) is var p && p == long.MinValue ? null : p;

    /// <summary>Reads the heap now and keeps the largest value.</summary>
    public void Sample()
    {
        if (NativeHeap.BytesInUse() is not { } now) return;
        long seen = Interlocked.Read(ref _peak);
        while (now > seen)
        {
            long was = Interlocked.CompareExchange(ref _peak, now, seen);
            if (was == seen) return;
            seen = was;
        }
    }
}

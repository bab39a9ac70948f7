using System.Diagnostics;
using static TorchSharp.torch;

namespace PipeSharp.Bench.Mpi;

/// <summary>
/// Diagnostic for measurement 1: MpiTransport receives every message into a new tensor, while the raw ping-pong
/// reuses two buffers. A new tensor's pages are mapped on first write (large blocks come straight from mmap and go
/// back to the system when freed), so a receive into it pays page faults that the raw loop never pays. This times
/// allocating a tensor, writing it once and freeing it, against writing a tensor that is reused; the difference is
/// the part of a transport receive that comes from the fresh buffer, not from MPI or the engine.
/// </summary>
internal static class FreshTensorCost
{
    private const int Repeats = 5;

    public static void Print(IReadOnlyList<int> sizes, TextWriter log)
    {
        log.WriteLine($"   diagnostic: one write of a fresh tensor (allocate, fill, free) vs of a reused one, rank 0, median of {Repeats}; " +
                      $"THP_MEM_ALLOC_ENABLE={Environment.GetEnvironmentVariable("THP_MEM_ALLOC_ENABLE") ?? "unset"}");
        log.WriteLine($"   {"size",8} {"fresh ms",9} {"reused ms",10} {"extra ms per receive",21}");
        foreach (int bytes in sizes)
        {
            long n = bytes / sizeof(float);
            using var reused = zeros(n);
            var fresh = new List<double>();
            var again = new List<double>();
            for (int r = 0; r < Repeats; r++)
            {
                long start = Stopwatch.GetTimestamp();
                using (var t = empty(n)) t.fill_(1);
                fresh.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                start = Stopwatch.GetTimestamp();
                reused.fill_(1);
                again.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            }
            double f = Stats.Median(fresh), u = Stats.Median(again);
            log.WriteLine($"   {MpiBenchOptions.FormatSize(bytes),8} {f,9:F3} {u,10:F3} {f - u,21:F3}");
        }
        log.WriteLine();
    }
}

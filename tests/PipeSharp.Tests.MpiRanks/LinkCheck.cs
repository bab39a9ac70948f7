using PipeSharp.Mpi;
using PipeSharp.Planning;

namespace PipeSharp.Tests.MpiRanks;

/// <summary>
/// The link between the two processes, measured by the profiler's ping-pong through the MPI transport: every process
/// gets the same symmetric matrix, free on the diagonal, with a positive latency between the two.
/// Prints "rank R: link 0-1 measured" with the figures.
/// </summary>
internal static class LinkCheck
{
    public static void Run(MpiCluster cluster)
    {
        var links = LinkProfiler.AcrossProcesses(cluster);
        if (links.GetLength(0) != 2 || links[0, 0] != LinkCost.Free || links[1, 1] != LinkCost.Free || links[0, 1] != links[1, 0])
            throw new InvalidOperationException($"rank {cluster.Rank}: the link matrix is not 2 x 2, symmetric and free on the diagonal: {links[0, 1]} / {links[1, 0]}");
        var link = links[0, 1];
        if (!(link.LatencySeconds > 0 && link.LatencySeconds < 0.1) || !(link.SecondsPerByte >= 0) || link.Seconds(LinkProfiler.LargeBytesAcrossProcesses) <= link.LatencySeconds / 2)
            throw new InvalidOperationException($"rank {cluster.Rank}: implausible link {link}");
        // Every process must agree (the matrix is summed across them): compare rank 0's figures with this one's.
        var sums = cluster.AllReduceSum([link.LatencySeconds, link.SecondsPerByte]);
        if (Math.Abs(sums[0] - 2 * link.LatencySeconds) > 1e-12 || Math.Abs(sums[1] - 2 * link.SecondsPerByte) > 1e-18)
            throw new InvalidOperationException($"rank {cluster.Rank}: the processes got different links");
        Console.WriteLine($"rank {cluster.Rank}: link 0-1 measured: latency {link.LatencySeconds * 1e6:0.0} us, " +
                          $"{(link.SecondsPerByte > 0 ? 1e-9 / link.SecondsPerByte : double.PositiveInfinity):0.00} GB/s, a 1 MB message {link.Seconds(1 << 20) * 1e3:0.000} ms");
    }
}

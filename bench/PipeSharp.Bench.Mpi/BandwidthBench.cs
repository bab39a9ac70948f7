using PipeSharp.Mpi;
using PipeSharp.Transport;
using static TorchSharp.torch;

namespace PipeSharp.Bench.Mpi;

/// <summary>
/// Measurement 1: ping-pong bandwidth of activation-sized float32 messages, raw MPI against <see cref="MpiTransport"/>,
/// in the same run. Every round measures each size with both variants, the first variant alternating from size to size
/// and round to round. The table gives medians over rounds, and for the ratios the median of each round's own ratio.
/// Bandwidth = 2 x bytes x iterations / seconds.
/// </summary>
internal static class BandwidthBench
{
    public const double Target = 0.80;

    /// <summary>Returns the lowest transport/raw ratio (median over rounds) over the sizes (every rank gets it; rank 0's is printed).</summary>
    public static double Run(MpiCluster cluster, MpiBenchOptions options, TextWriter log)
    {
        var engine = cluster.Engine;
        int rank = cluster.Rank;
        var sizes = options.Sizes;
        log.WriteLine($"1. ping-pong bandwidth, rank 0 <-> rank 1: {options.PingPongRounds} rounds, medians; per measurement 1 untimed exchange, then " +
                      $"{MpiBenchOptions.FormatSize(options.VolumePerMeasurement)} each way (at least {MpiBenchOptions.MinIterations} exchanges)");
        log.WriteLine("   raw: MPI_Isend + MPI_Improbe/MPI_Imrecv + MPI_Test polling in one loop with MPI to itself, own communicator, buffers allocated once");
        log.WriteLine("   raw, fresh: the same, but every message received into a newly allocated tensor, as a pipeline needs");
        log.WriteLine("   transport: MpiTransport.Send / Receive from the main thread; the received tensor is what goes back");

        // Collective calls in the same order on both ranks: the raw communicator, then the transport's (it dups its own).
        int comm = engine.Call(() =>
        {
            MpiNative.Check(MpiNative.MPI_Comm_dup(MpiNative.CommWorld, out int c), "MPI_Comm_dup");
            return c;
        });
        using var transport = new MpiTransport(engine, stages: 2, microBatches: 1, key => key.Stage);
        // Raw buffers, written once so that no page is first touched inside a timed loop.
        var buffers = sizes.Select(s => (zeros(s / sizeof(float)), zeros(s / sizeof(float)))).ToList();

        var raw = sizes.Select(_ => new List<double>()).ToList();
        var piped = sizes.Select(_ => new List<double>()).ToList();
        var fresh = sizes.Select(_ => new List<double>()).ToList();
        try
        {
            for (int round = 0; round < options.PingPongRounds; round++)
            {
                for (int k = 0; k < sizes.Count; k++)
                {
                    int bytes = sizes[k], iterations = options.Iterations(bytes);
                    double Rate(double seconds) => 2.0 * bytes * iterations / seconds / 1e9;
                    void MeasureRaw()
                    {
                        cluster.Barrier();
                        raw[k].Add(Rate(PingPong.Raw(engine, comm, rank, buffers[k].Item1, buffers[k].Item2, bytes, iterations)));
                    }
                    void MeasureTransport()
                    {
                        cluster.Barrier();
                        piped[k].Add(Rate(PingPong.Transport(transport, rank, bytes, iterations)));
                    }
                    void MeasureFresh()
                    {
                        cluster.Barrier();
                        fresh[k].Add(Rate(PingPong.RawFresh(engine, comm, rank, bytes, iterations)));
                    }
                    if ((round + k) % 2 == 0) { MeasureRaw(); MeasureFresh(); MeasureTransport(); }
                    else { MeasureTransport(); MeasureFresh(); MeasureRaw(); }
                }
                log.WriteLine($"   round {round + 1}/{options.PingPongRounds} done (load {Machine.LoadAverage()})");
            }
        }
        finally
        {
            foreach (var (a, b) in buffers) { a.Dispose(); b.Dispose(); }
            // After a failure the engine takes no more calls (and the process is going down anyway).
            if (cluster.Failure == null) engine.Call(() => MpiNative.MPI_Comm_free(ref comm));
        }

        log.WriteLine();
        log.WriteLine("   ratios are medians over rounds of each round's own ratio (the two variants measured back to back), with the");
        log.WriteLine("   quartiles: the machine's speed drifts between rounds, and a ratio within one round cancels most of it out");
        log.WriteLine($"   {"size",8} {"exchanges",9} {"raw GB/s",9} {"transport GB/s",15} {"transport/raw",14} {"quartiles",12} {"raw fresh GB/s",15} {"transport/raw fresh",20}");
        double lowest = double.PositiveInfinity;
        for (int k = 0; k < sizes.Count; k++)
        {
            var ratios = piped[k].Zip(raw[k], (t, r) => t / r).ToList();
            double ratio = Stats.Median(ratios);
            lowest = Math.Min(lowest, ratio);
            log.WriteLine($"   {MpiBenchOptions.FormatSize(sizes[k]),8} {options.Iterations(sizes[k]),9} {Stats.Median(raw[k]),9:F2} {Stats.Median(piped[k]),15:F2} " +
                          $"{ratio,14:F3} {Stats.Quantile(ratios, 0.25),5:F2}-{Stats.Quantile(ratios, 0.75),-5:F2}  {Stats.Median(fresh[k]),15:F2} " +
                          $"{Stats.Median(piped[k].Zip(fresh[k], (t, f) => t / f)),20:F3}{(ratio >= Target ? "" : "  < target")}");
        }
        log.WriteLine();
        if (rank == 0) FreshTensorCost.Print(sizes, log);
        return lowest;
    }
}

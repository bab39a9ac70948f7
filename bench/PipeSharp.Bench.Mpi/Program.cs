// PipeSharp across MPI processes, measured against what it is built from and what it replaces, in one run:
//   1. ping-pong bandwidth of activation-sized messages through MpiTransport against raw MPI calls (target >= 0.80);
//   2. the step time of a 2-rank MPI pipeline against the same pipeline as 2 threads of one process (target <= 1.10);
//   3. with --only straggler: rank 0 at half speed (its core shared with a busy loop), automatic rebalancing against every
//      static split (targets: after the move >= 0.90 x the best static split, >= 1.3 x the usual split).
// Usage (2 processes exactly; only rank 0 prints):
//   dotnet build bench/PipeSharp.Bench.Mpi -c Release
//   mpirun.mpich -np 2 dotnet bench/PipeSharp.Bench.Mpi/bin/Release/net10.0/PipeSharp.Bench.Mpi.dll [--rounds 5 --steps 10]
using PipeSharp.Bench;
using PipeSharp.Bench.Mpi;
using PipeSharp.Mpi;
using PipeSharp.Native;
using TorchSharp;

bool root = Environment.GetEnvironmentVariable("PMI_RANK") is null or "0";
var options = MpiBenchOptions.Parse(args, print: root);
if (options is null) return;
if (!MpiCluster.IsLaunchedByMpirun)
{
    Console.Error.WriteLine("PipeSharp.Bench.Mpi runs as 2 MPI processes: " +
                            "mpirun.mpich -np 2 dotnet bench/PipeSharp.Bench.Mpi/bin/Release/net10.0/PipeSharp.Bench.Mpi.dll");
    Environment.ExitCode = 2;
    return;
}

TorchNative.EnsureLoaded();
torch.set_num_threads(1); // the main threads only wait; the pipelines' workers set their own count (1)
using var cluster = MpiCluster.Initialize();
var stdout = Console.Out;
if (!cluster.IsRoot) Console.SetOut(TextWriter.Null); // rank 1 mirrors rank 0's calls; its errors still reach stderr
var log = Console.Out;
try
{
    if (cluster.Size != 2)
        throw new ArgumentException($"this benchmark needs exactly 2 MPI processes (mpirun.mpich -np 2 ...), not {cluster.Size}.");
    log.WriteLine("PipeSharp.Bench.Mpi: PipeSharp over MPI (MPICH) against raw MPI and against the in-process pipeline");
    log.WriteLine($"  machine: {Machine.Describe()}");
    log.WriteLine($"  MPI: {cluster.Size} processes on {cluster.HostName}; a waiting thread polls MPI itself " +
                  $"({MpiEngine.BusyPolls} polls without pause, then yielding its core between polls, for " +
                  $"{MpiEngine.SpinTime.TotalMilliseconds:0.#} ms after its last progress when no transfer is in flight)");
    log.WriteLine();

    double lowestBandwidthRatio = double.NaN, stepRatio = double.NaN;
    if (options.Bandwidth) lowestBandwidthRatio = BandwidthBench.Run(cluster, options, log);
    if (options.StepTime) stepRatio = StepTimeBench.Run(cluster, options, log);
    var straggler = options.Straggler ? StragglerBench.Run(cluster, options, log) : default;

    log.WriteLine($"load after: {Machine.LoadAverage()} (the benchmark itself accounts for up to ~2)");
    if (options.Rounds < 3) log.WriteLine("(a smoke-test sized run: the verdicts below are noise, not measurements)");
    if (options.Bandwidth)
        log.WriteLine($"{(lowestBandwidthRatio >= BandwidthBench.Target ? "PASS" : "FAIL")}  bandwidth transport/raw >= {BandwidthBench.Target:F2} at every size " +
                      $"(lowest {lowestBandwidthRatio:F3})");
    if (options.Straggler)
    {
        log.WriteLine($"{(straggler.AfterOverBest >= StragglerBench.BestTarget ? "PASS" : "FAIL")}  straggler: after the move / best static split = " +
                      $"{straggler.AfterOverBest:F3} (target >= {StragglerBench.BestTarget:F2})");
        log.WriteLine($"{(straggler.AfterOverUnbalanced >= StragglerBench.UnbalancedTarget ? "PASS" : "FAIL")}  straggler: after the move / usual split = " +
                      $"{straggler.AfterOverUnbalanced:F3} (target >= {StragglerBench.UnbalancedTarget:F2})");
    }
    if (options.StepTime)
        log.WriteLine($"{(stepRatio <= StepTimeBench.Target ? "PASS" : "FAIL")}  step time MPI / in-process = {stepRatio:F3} " +
                      $"(target <= {StepTimeBench.Target:F2})");
}
catch (Exception e)
{
    Console.Error.WriteLine($"rank {cluster.Rank}: {e}");
    Environment.ExitCode = 1;
    // Tell the other rank, so that it stops waiting for this one instead of running into the peer timeout.
    cluster.ReportFailure(e);
}
finally
{
    Console.SetOut(stdout);
}

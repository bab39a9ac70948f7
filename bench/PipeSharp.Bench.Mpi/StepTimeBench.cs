using System.Diagnostics;
using PipeSharp.Models;
using PipeSharp.Mpi;
using PipeSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Bench.Mpi;

/// <summary>
/// Measurement 2: the step time of a 2-stage pipeline run as 2 MPI processes (one stage each) against the same
/// pipeline in one process with 2 worker threads, same model, same batch, same schedule, 1 intra-op thread per stage
/// either way. Both variants' compute is the same, so the ratio is what MPI adds: message latency, the engine thread's
/// polling, and the loss all-reduce at the end of every step. While rank 0 runs the in-process pipeline, rank 1 waits
/// in a barrier, which costs little CPU (its engine sleeps 1 ms a turn once no progress is made).
/// </summary>
internal static class StepTimeBench
{
    public const double Target = 1.10;

    // The MLP of bench/PipeSharp.Bench: 4 linear layers 1024 wide, batch 256, about 80 ms a step on 2 stages of this CPU.
    private const int Width = 1024, Layers = 4, Batch = 256, Seed = 1234;

    // One pipeline and its figures: per measurement the mean step time, per timed step each stage's busy time.
    private sealed class Variant(string name, Pipeline? pipe)
    {
        public string Name => name;
        public List<double> StepMs { get; } = new();
        public List<double>[] BusyMs { get; } = [new(), new()];
        public float LastLoss { get; set; } = float.NaN;

        public float Steps(Tensor input, Tensor target, int n, bool record)
        {
            float loss = float.NaN;
            for (int k = 0; k < n; k++)
            {
                loss = pipe!.TrainStep(input, target);
                if (!record) continue;
                // Across processes a stage held elsewhere reads 0 here; the caller keeps only the local stages' figures.
                var busy = pipe.LastStep!.StageBusySeconds;
                for (int s = 0; s < 2; s++) BusyMs[s].Add(busy[s] * 1000);
            }
            return loss;
        }
    }

    /// <summary>Returns the ratio of median step times, MPI / in-process (every rank gets it; rank 0's is printed).</summary>
    public static double Run(MpiCluster cluster, MpiBenchOptions options, TextWriter log)
    {
        bool root = cluster.IsRoot;
        int m = options.MicroBatches;
        log.WriteLine($"2. step time: MLP {Layers} linear layers {Width} wide (ReLU between), batch {Batch}, MSE loss, SGD; 2 stages (2,2 layers), " +
                      $"1f1b, {m} micro-batches, 1 intra-op thread per stage; {options.Rounds} rounds x {options.Steps} timed steps " +
                      $"(+1 untimed) per variant, {options.WarmupSteps} warm-up steps per variant, medians");

        // Every rank passes the same batch (the MPI pipeline requires it); both pipelines start from the same weights.
        var g = new Generator(Seed);
        using var input = randn([Batch, Width], generator: g);
        using var target = randn([Batch, Width], generator: g);
        PipelineOptions Options(MpiCluster? c) => new()
        {
            Ranks = 2, ThreadsPerRank = 1, MicroBatches = m, Schedule = "1f1b", Backend = c,
        };
        // Collective set-up (communicators) on both ranks in the same order; the in-process pipeline only on rank 0.
        using var mpiModel = CreateModel();
        using var mpiPipe = new Pipeline(mpiModel, Options(cluster), Loss, Optimizer);
        using var localModel = root ? CreateModel() : null;
        using var localPipe = root ? new Pipeline(localModel!, Options(null), Loss, Optimizer) : null;

        var mpi = new Variant("MPI: 2 processes, one stage each", mpiPipe);
        var local = new Variant("in-process: rank 0 alone, 2 worker threads", localPipe);

        // Both ranks start together (the barrier); in-process, rank 1 goes straight to the closing barrier and waits
        // there until rank 0 has finished.
        void Measure(Variant v, int steps, bool record)
        {
            cluster.Barrier();
            if (v == local && !root) { cluster.Barrier(); return; }
            v.Steps(input, target, 1, record: false); // untimed: the first step after a switch pays for cold caches
            var clock = Stopwatch.StartNew();
            float loss = v.Steps(input, target, steps, record);
            double ms = clock.Elapsed.TotalMilliseconds / steps;
            if (v == local) cluster.Barrier();
            if (!record) return;
            v.StepMs.Add(ms);
            v.LastLoss = loss;
        }

        if (options.WarmupSteps > 0)
        {
            Measure(mpi, options.WarmupSteps, record: false);
            Measure(local, options.WarmupSteps, record: false);
        }
        for (int round = 0; round < options.Rounds; round++)
        {
            if (round % 2 == 0) { Measure(mpi, options.Steps, true); Measure(local, options.Steps, true); }
            else { Measure(local, options.Steps, true); Measure(mpi, options.Steps, true); }
            if (root) log.WriteLine($"   round {round + 1}/{options.Rounds}: MPI {mpi.StepMs[^1]:F1} ms, in-process {local.StepMs[^1]:F1} ms (load {Machine.LoadAverage()})");
        }

        // Stage 1 of the MPI pipeline runs on rank 1: collect its median busy time for rank 0's table.
        var busy = new double[2];
        busy[cluster.Rank] = Stats.Median(mpi.BusyMs[cluster.Rank]);
        busy = cluster.AllReduceSum(busy);
        double ratio = Stats.Median(mpi.StepMs) / Stats.Median(local.StepMs);
        // Rank 1 has no in-process figures; every rank returns the same verdict.
        ratio = cluster.AllReduceSum([root ? ratio : 0])[0];

        log.WriteLine();
        log.WriteLine($"   {"variant",-44} {"step ms",8} {"min",7} {"max",7}  {"busy ms: stage 0",16} {"stage 1",8}  last loss");
        log.WriteLine($"   {mpi.Name,-44} {Stats.Median(mpi.StepMs),8:F1} {mpi.StepMs.Min(),7:F1} {mpi.StepMs.Max(),7:F1}  {busy[0],16:F1} {busy[1],8:F1}  {mpi.LastLoss:F6}");
        if (root)
            log.WriteLine($"   {local.Name,-44} {Stats.Median(local.StepMs),8:F1} {local.StepMs.Min(),7:F1} {local.StepMs.Max(),7:F1}  " +
                          $"{Stats.Median(local.BusyMs[0]),16:F1} {Stats.Median(local.BusyMs[1]),8:F1}  {local.LastLoss:F6}");
        log.WriteLine($"   {"ratio MPI / in-process",-44} {ratio,8:F3}");
        if (root)
        {
            // The busier stage bounds the step; the rest is the schedule's bubble plus waiting for messages and the loss.
            double mpiIdle = Stats.Median(mpi.StepMs) - Math.Max(busy[0], busy[1]);
            double localIdle = Stats.Median(local.StepMs) - Math.Max(Stats.Median(local.BusyMs[0]), Stats.Median(local.BusyMs[1]));
            log.WriteLine($"   step minus the busier stage's busy time: MPI {mpiIdle:F1} ms, in-process {localIdle:F1} ms " +
                          $"(difference {mpiIdle - localIdle:F1} ms: what MPI adds beyond computing)");
        }
        log.WriteLine("   busy ms: a stage's computing time per step (forwards, backwards, optimizer step); equal busy times and a longer step");
        log.WriteLine("   mean the difference is waiting (messages, the loss all-reduce); the last losses agree if both pipelines computed alike");
        log.WriteLine();
        return ratio;
    }

    private static TorchSharp.Modules.Sequential CreateModel()
    {
        manual_seed(Seed);
        return Mlp.Create(Width, Width, Width, Layers);
    }

    private static Tensor Loss(Tensor output, Tensor target) => nn.functional.mse_loss(output, target);

    private static optim.Optimizer Optimizer(IEnumerable<TorchSharp.Modules.Parameter> parameters) => optim.SGD(parameters, 1e-3);
}

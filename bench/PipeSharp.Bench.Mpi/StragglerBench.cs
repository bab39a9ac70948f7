using System.Diagnostics;
using PipeSharp.Models;
using PipeSharp.Mpi;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Bench.Mpi;

/// <summary>
/// Measurement 3 (issue 13, item 6): a real straggler. Each process is pinned to its own core (taskset) and rank 0 shares
/// its core with a CPU-bound busy loop, so it runs at about half speed. On a GPT of 2 ranks: every static split
/// (rank 0 holding 1 .. L-1 layers) is measured, then a run that starts from the usual split (by parameter count) with
/// automatic rebalancing on; once it has moved, it is measured side by side with the best static split and the usual
/// one in alternating rounds. Prints throughput after the move / best static split (target >= 0.90) and after the move
/// / the usual split (target >= 1.3), medians over the rounds.
/// </summary>
internal static class StragglerBench
{
    public const double BestTarget = 0.90, UnbalancedTarget = 1.3;

    private static readonly GptConfig Config = new(VocabularySize: 65, ContextLength: 32, Layers: 6, Width: 96, Heads: 4);
    private const int Batch = 32;

    public static (double AfterOverBest, double AfterOverUnbalanced) Run(MpiCluster cluster, MpiBenchOptions options, TextWriter log)
    {
        if (Environment.ProcessorCount < 2) throw new PlatformNotSupportedException("the straggler benchmark needs 2 cores.");
        Pin(Environment.ProcessId, cluster.Rank);
        using var busyLoop = cluster.Rank == 0 ? StartBusyLoop(core: 0) : null;
        try
        {
            return Measure(cluster, options, log);
        }
        finally
        {
            if (busyLoop is { HasExited: false }) busyLoop.Kill(entireProcessTree: true);
        }
    }

    private static (double, double) Measure(MpiCluster cluster, MpiBenchOptions options, TextWriter log)
    {
        var spec = Gpt.Spec(Config, seed: 1);
        int layers = spec.Layers.Count;
        var usual = Partitioning.Balance.ByCost(spec.Layers.Select(l => l.Cost).ToList(), 2).ToArray();
        log.WriteLine($"3. straggler: GPT {Config.Layers} blocks {Config.Width} wide ({layers} layers), batch {Batch} x {Config.ContextLength} tokens, AdamW, " +
                      $"2 ranks 1f1b, {options.MicroBatches} micro-batches, 1 intra-op thread; each process pinned to its core, rank 0's core shared " +
                      $"with a busy loop; {options.WarmupSteps} warm-up + {options.Steps} timed steps per split, medians");
        var gen = new Generator(7);
        using var tokens = randint(0, Config.VocabularySize, [Batch, Config.ContextLength + 1], generator: gen);
        using var x = tokens[.., ..Config.ContextLength];
        using var y = tokens[.., 1..];
        double tokensPerStep = Batch * Config.ContextLength;
        PipelineOptions Options(int[] balance, RebalancingOptions? rebalancing) => new()
        {
            Balance = balance, MicroBatches = options.MicroBatches, ThreadsPerRank = 1, Backend = cluster, Rebalancing = rebalancing,
        };
        Pipeline Pipe(PipelineOptions o) => new(spec, o, Gpt.Loss, ps => optim.AdamW(ps, 1e-3));

        // Tokens/s of `steps` steps of a pipeline (rank 0's median step, on every rank).
        double Rate(Pipeline pipe, int steps)
        {
            var seconds = new List<double>();
            for (int s = 0; s < steps; s++)
            {
                pipe.TrainStep(x, y);
                seconds.Add(pipe.LastStep!.WallSeconds);
            }
            return Agreed(cluster, tokensPerStep / Stats.Median(seconds));
        }

        // 1. Every static split, to find the best one for this condition.
        var rates = new Dictionary<int, double>();
        for (int k = 1; k < layers; k++)
        {
            using var pipe = Pipe(Options([k, layers - k], null));
            for (int s = 0; s < options.WarmupSteps; s++) pipe.TrainStep(x, y);
            rates[k] = Rate(pipe, options.Steps);
            log.WriteLine($"   static {k},{layers - k}: {rates[k],8:F0} tokens/s{(k == usual[0] ? "   (the usual split, by parameter count)" : "")}");
        }
        int best = rates.MaxBy(r => r.Value).Key;

        // 2. From the usual split with rebalancing on, until it has moved and held still for a step.
        using var moving = Pipe(Options(usual, new RebalancingOptions { Threshold = 0.1, Steps = 3, MinimumGain = 0.15 }));
        int limit = options.WarmupSteps + 60, steady = 0;
        for (int s = 0; s < limit && steady < 2; s++)
        {
            moving.TrainStep(x, y);
            steady = moving.Moves.Count > 0 && moving.LastStep!.Moves.Count == 0 ? steady + 1 : 0;
        }
        foreach (var m in moving.Moves) log.WriteLine($"   rebalancing: {m}");
        if (moving.Moves.Count == 0) throw new InvalidOperationException($"rebalancing made no move in {limit} steps (balance {string.Join(",", moving.Balance)}).");

        // 3. The moved pipeline, the best static split and the usual one side by side, in alternating rounds (the busy
        // loop's share of the core drifts over minutes): each ratio is the median over rounds of the ratio within a round.
        using var bestPipe = Pipe(Options([best, layers - best], null));
        using var usualPipe = Pipe(Options(usual, null));
        for (int s = 0; s < options.WarmupSteps; s++)
        {
            bestPipe.TrainStep(x, y);
            usualPipe.TrainStep(x, y);
        }
        int moves = moving.Moves.Count;
        var toBest = new List<double>();
        var toUsual = new List<double>();
        var after = new List<double>();
        for (int r = 0; r < options.Rounds; r++)
        {
            double m, b, u;
            if (r % 2 == 0) (m, b, u) = (Rate(moving, options.Steps), Rate(bestPipe, options.Steps), Rate(usualPipe, options.Steps));
            else (u, b, m) = (Rate(usualPipe, options.Steps), Rate(bestPipe, options.Steps), Rate(moving, options.Steps));
            after.Add(m);
            toBest.Add(m / b);
            toUsual.Add(m / u);
            log.WriteLine($"   round {r + 1}: after the move ({string.Join(",", moving.Balance)}) {m:F0}, best static {best},{layers - best} {b:F0}, " +
                          $"usual {usual[0]},{usual[1]} {u:F0} tokens/s");
        }
        if (moving.Moves.Count > moves) log.WriteLine($"   (rebalancing moved again while measured: {string.Join("; ", moving.Moves.Skip(moves))})");
        log.WriteLine($"   after the move: {Stats.Median(after):F0} tokens/s; / best static {Stats.Median(toBest):F3} (rounds {toBest.Min():F3}-{toBest.Max():F3}); " +
                      $"/ usual {Stats.Median(toUsual):F3} (rounds {toUsual.Min():F3}-{toUsual.Max():F3})");
        log.WriteLine();
        return (Stats.Median(toBest), Stats.Median(toUsual));
    }

    // Rank 0's figure, on every rank.
    private static double Agreed(MpiCluster cluster, double value) => cluster.AllReduceSum([cluster.IsRoot ? value : 0])[0];

    private static void Pin(int pid, int core)
    {
        using var taskset = Process.Start(new ProcessStartInfo("taskset", $"-a -p -c {core} {pid}") { RedirectStandardOutput = true, UseShellExecute = false })!;
        taskset.StandardOutput.ReadToEnd();
        taskset.WaitForExit();
        if (taskset.ExitCode != 0) throw new InvalidOperationException($"taskset could not pin process {pid} to core {core} (exit {taskset.ExitCode}).");
    }

    // A CPU-bound loop on `core`, ended by timeout after 10 minutes if nobody kills it first; not holding mpirun's pipes.
    private static Process StartBusyLoop(int core) =>
        Process.Start(new ProcessStartInfo("taskset", $"-c {core} timeout 600 sh -c \"while :; do :; done\"")
        {
            UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true,
        })!;
}

using System.CommandLine;
using PipeSharp.Cli.Options;
using PipeSharp.Cli.Output;
using PipeSharp.Models;
using PipeSharp.Native;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using PipeSharp.Verification;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Cli.Commands;

/// <summary>
/// <c>pipesharp verify</c>: checks with <see cref="EquivalenceCheck"/> that pipelined training ends with the same
/// parameters as plain single-device training, for every schedule and a grid of stage and micro-batch counts.
/// </summary>
internal static class VerifyCommand
{
    private static readonly int[] RankCounts = [1, 2, 4, 5];
    private static readonly int[] MicroBatchCounts = [1, 2, 4, 8];
    private const int BatchSize = 16;
    private const long DataSeed = 7;

    /// <summary>The optimizers of the test suite: with momentum (SGD) and with per-parameter state (Adam).</summary>
    private static readonly (string Name, string Description, Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> Create)[] Optimizers =
    [
        ("sgd", "SGD lr 0.05 momentum 0.9", ps => optim.SGD(ps, 0.05, momentum: 0.9)),
        ("adam", "Adam lr 1e-3", ps => optim.Adam(ps, 1e-3)),
    ];

    private static readonly Option<int> Steps = new("--steps")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Training steps per check.",
        DefaultValueFactory = _ => 5,
        HelpName = "K",
    };

    private static readonly Option<string?> Model = new("--model")
    {
        Description = "Check only this model: mlp, cnn, or one whose stages pass several tensors: unet (skips across stages) or " +
                      "transformer (hidden state and a padding mask), for every schedule, with Adam. Default: mlp and cnn " +
                      "(and the tied GPT under mpirun).",
        HelpName = "NAME",
    };

    private static readonly Option<double> Tolerance = new("--tolerance")
    {
        CustomParser = Numbers.NonNegative,
        Description = "Largest allowed absolute difference between any parameter of the two trained copies.",
        DefaultValueFactory = _ => 1e-5,
        HelpName = "X",
    };

    public static Command Create()
    {
        var command = new Command("verify",
            "Check that pipelined training gives the same parameters as single-device training (up to float round-off), " +
            "as the test suite does: small mlp (10 layers) and cnn (10 conv layers + head) models, every schedule " +
            $"({string.Join(", ", ScheduleGenerators.Names)}), ranks {string.Join(",", RankCounts)} and micro-batches " +
            $"{string.Join(",", MicroBatchCounts)} (interleaved only where micro-batches are a multiple of ranks), " +
            $"{string.Join(" and ", Optimizers.Select(o => o.Description))}, cross-entropy, batch {BatchSize}. " +
            "Exits with 1 if any check exceeds the tolerance. Under mpirun (N processes, --replicas D) it checks " +
            "every schedule with N/D ranks per replica, one rank per process, for mlp, cnn and a GPT with a tied " +
            "embedding (whose copies on the first and last stage must stay identical).")
        {
            Steps, Tolerance, Model,
        };
        Model.AcceptOnlyFromAmong(["mlp", "cnn", .. BoundaryModelChecks.Names]);
        foreach (var option in ClusterOptions.All) command.Options.Add(option);
        command.SetAction(args =>
        {
            using var signals = new StopSignals();
            return MpiRun.Execute(args, run => Run(args, run?.Cluster, signals));
        });
        return command;
    }

    /// <summary>Runs the checks; after SIGINT or SIGTERM it ends after the check in progress (the same on every rank) with 130 or 143.</summary>
    private static int Run(ParseResult args, Mpi.MpiCluster? cluster, StopSignals signals)
    {
        TorchNative.EnsureLoaded();
        int steps = args.GetValue(Steps);
        double tolerance = args.GetValue(Tolerance);
        int replicas = args.GetValue(ClusterOptions.Replicas);
        if (cluster != null && cluster.Size % replicas != 0)
            throw new ArgumentException($"--replicas {replicas} does not divide the {cluster.Size} MPI processes: use a divisor of {cluster.Size}.");
        if (replicas * MicroBatchCounts.Min() > BatchSize)
            throw new ArgumentException($"--replicas {replicas} leaves too few of the batch's {BatchSize} samples per replica.");

        if (cluster != null) Console.WriteLine($"{cluster.Size} MPI processes: {replicas} replica{(replicas == 1 ? "" : "s")} x {cluster.Size / replicas} ranks");
        Console.WriteLine($"{"model",-6} {"optimizer",-9} {"schedule",-11} {"ranks",6} {"micro-batches",13} {"max |diff|",11}  ok");
        int checks = 0, mismatches = 0;
        string? only = args.GetValue(Model);
        if (only is not null && BoundaryModelChecks.Names.Contains(only))
        {
            // At most 8 pieces: the models have 8 layers.
            (checks, mismatches) = BoundaryModelChecks.Run(only, Cases(cluster, replicas, [1, 2, 4]), replicas, cluster, steps, tolerance, signals);
            if (signals.ExitCode is { } stoppedAt) return Stopped(stoppedAt, checks, mismatches);
        }
        foreach (var (name, modelSeed) in new[] { ("mlp", 1L), ("cnn", 2L) }.Where(m => only is null || m.Item1 == only))
        {
            var spec = BuiltInModels.ForVerification(name);
            var batches = Batches(spec, steps);
            try
            {
                foreach (var optimizer in Optimizers)
                foreach (var (schedule, stages, microBatches) in Cases(cluster, replicas))
                {
                    // cnn: the article's split when each rank holds one stage; with several, by parameter count.
                    bool oneChunk = ScheduleGenerators.StagesPerRank(schedule, null) == 1;
                    var options = new PipelineOptions
                    {
                        Ranks = stages,
                        Balance = oneChunk ? spec.DefaultBalance?.Invoke(stages) : null,
                        MicroBatches = microBatches,
                        Schedule = schedule,
                        ThreadsPerRank = 1,
                        Replicas = replicas,
                        Backend = cluster,
                        Stop = signals.Request,
                    };
                    double diff = EquivalenceCheck.MaxParameterDifference(
                        () => { torch.manual_seed(modelSeed); return spec.Create(); },
                        options, optimizer.Create, (output, target) => nn.functional.cross_entropy(output, target), batches);
                    bool ok = diff <= tolerance;
                    checks++;
                    if (!ok) mismatches++;
                    Console.WriteLine($"{name,-6} {optimizer.Name,-9} {schedule,-11} {stages,6} {microBatches,13} {diff,11:0.00e+00}  {(ok ? "ok" : "FAIL")}");
                    if (signals.ExitCode is { } code) return Stopped(code, checks, mismatches);
                }
            }
            finally
            {
                foreach (var (input, target) in batches) { input.Dispose(); target.Dispose(); }
            }
        }
        if (cluster != null && only is null)
        {
            // The tied embedding: its copies on the first and last stage of each replica, across processes.
            foreach (var (schedule, stages, microBatches) in Cases(cluster, replicas))
            {
                var (diff, drift) = TiedGpt(schedule, stages, microBatches, replicas, cluster, steps, signals.Request);
                bool ok = diff <= tolerance && drift == 0;
                checks++;
                if (!ok) mismatches++;
                Console.WriteLine($"{"gpt",-6} {"adamw",-9} {schedule,-11} {stages,6} {microBatches,13} {diff,11:0.00e+00}  {(ok ? "ok" : "FAIL")}" +
                                  $"  tied copies differ by {drift:0.##e+00}");
                if (signals.ExitCode is { } code) return Stopped(code, checks, mismatches);
            }
        }
        Console.WriteLine();
        Console.WriteLine($"{checks} checks, {mismatches} mismatches (tolerance {tolerance.ToString("G").ToLowerInvariant()})");
        return mismatches == 0 ? ExitCodes.Success : ExitCodes.Failure;
    }

    private static int Stopped(int code, int checks, int mismatches)
    {
        Console.WriteLine();
        Console.WriteLine($"stopped by {StopSignals.Name(code)} after {checks} checks, {mismatches} mismatches");
        return code;
    }

    /// <summary>
    /// Every schedule x ranks x micro-batches; interleaved needs micro-batches to be a multiple of ranks. Under MPI the
    /// ranks are the processes of one replica; each replica's share of the batch must hold its micro-batches.
    /// </summary>
    private static IEnumerable<(string Schedule, int Ranks, int MicroBatches)> Cases(Mpi.MpiCluster? cluster, int replicas, int[]? rankCounts = null) =>
        from schedule in ScheduleGenerators.Names
        from stages in cluster is null ? rankCounts ?? RankCounts : [cluster.Size / replicas]
        from microBatches in MicroBatchCounts
        where schedule != "interleaved" || microBatches % stages == 0
        where replicas * microBatches <= BatchSize && (cluster is null || microBatches >= stages)
        select (schedule, stages, microBatches);

    /// <summary>A small GPT with its head tied to the token embedding, trained with AdamW; the copies' largest difference.</summary>
    private static (double Difference, double Drift) TiedGpt(string schedule, int stages, int microBatches, int replicas, Mpi.MpiCluster cluster, int steps,
        StopRequest stop)
    {
        var config = new GptConfig(VocabularySize: 13, ContextLength: 8, Layers: 6, Width: 16, Heads: 2, TieEmbeddings: true);
        var generator = new Generator(5);
        var batches = Enumerable.Range(0, steps).Select(_ =>
        {
            var tokens = randint(0, 13, [BatchSize, 9], generator: generator);
            return (tokens[.., ..8], tokens[.., 1..]);
        }).ToList();
        try
        {
            var options = new PipelineOptions
            {
                Ranks = stages, MicroBatches = microBatches, Schedule = schedule, ThreadsPerRank = 1, Replicas = replicas, Backend = cluster,
                Stop = stop,
            };
            return EquivalenceCheck.Compare(() => { torch.manual_seed(3); return Gpt.Create(config); }, options,
                ps => optim.AdamW(ps, 1e-3), Gpt.Loss, batches);
        }
        finally
        {
            foreach (var (x, y) in batches) { x.Dispose(); y.Dispose(); }
        }
    }

    private static List<(Tensor Input, Tensor Target)> Batches(BuiltInModel spec, int steps)
    {
        using var task = new SyntheticClassification(spec.SampleShape, spec.Classes, DataSeed);
        return Enumerable.Range(0, steps).Select(_ => task.NextBatch(BatchSize)).ToList();
    }
}

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
    private static readonly int[] StageCounts = [1, 2, 4, 5];
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
            $"({string.Join(", ", ScheduleGenerators.Names)}), stages {string.Join(",", StageCounts)} and micro-batches " +
            $"{string.Join(",", MicroBatchCounts)} (interleaved only where micro-batches are a multiple of stages), " +
            $"{string.Join(" and ", Optimizers.Select(o => o.Description))}, cross-entropy, batch {BatchSize}. " +
            "Exits with 1 if any check exceeds the tolerance.")
        {
            Steps, Tolerance,
        };
        command.SetAction(Run);
        return command;
    }

    private static int Run(ParseResult args)
    {
        TorchNative.EnsureLoaded();
        int steps = args.GetValue(Steps);
        double tolerance = args.GetValue(Tolerance);

        Console.WriteLine($"{"model",-6} {"optimizer",-9} {"schedule",-11} {"stages",6} {"micro-batches",13} {"max |diff|",11}  ok");
        int checks = 0, mismatches = 0;
        foreach (var (name, modelSeed) in new[] { ("mlp", 1L), ("cnn", 2L) })
        {
            var spec = BuiltInModels.ForVerification(name);
            var batches = Batches(spec, steps);
            try
            {
                foreach (var optimizer in Optimizers)
                foreach (var (schedule, stages, microBatches) in Cases())
                {
                    // cnn: the article's split when each stage holds one piece; with chunks, by parameter count.
                    bool oneChunk = ScheduleGenerators.ChunksPerRank(schedule, null) == 1;
                    var options = new PipelineOptions
                    {
                        Stages = stages,
                        Balance = oneChunk ? spec.DefaultBalance?.Invoke(stages) : null,
                        MicroBatches = microBatches,
                        Schedule = schedule,
                        ThreadsPerStage = 1,
                    };
                    double diff = EquivalenceCheck.MaxParameterDifference(
                        () => { torch.manual_seed(modelSeed); return spec.Create(); },
                        options, optimizer.Create, (output, target) => nn.functional.cross_entropy(output, target), batches);
                    bool ok = diff <= tolerance;
                    checks++;
                    if (!ok) mismatches++;
                    Console.WriteLine($"{name,-6} {optimizer.Name,-9} {schedule,-11} {stages,6} {microBatches,13} {diff,11:0.00e+00}  {(ok ? "ok" : "FAIL")}");
                }
            }
            finally
            {
                foreach (var (input, target) in batches) { input.Dispose(); target.Dispose(); }
            }
        }
        Console.WriteLine();
        Console.WriteLine($"{checks} checks, {mismatches} mismatches (tolerance {tolerance.ToString("G").ToLowerInvariant()})");
        return mismatches == 0 ? ExitCodes.Success : ExitCodes.Failure;
    }

    /// <summary>Every schedule x stages x micro-batches; interleaved needs micro-batches to be a multiple of stages.</summary>
    private static IEnumerable<(string Schedule, int Stages, int MicroBatches)> Cases() =>
        from schedule in ScheduleGenerators.Names
        from stages in StageCounts
        from microBatches in MicroBatchCounts
        where schedule != "interleaved" || microBatches % stages == 0
        select (schedule, stages, microBatches);

    private static List<(Tensor Input, Tensor Target)> Batches(BuiltInModel spec, int steps)
    {
        using var task = new SyntheticClassification(spec.SampleShape, spec.Classes, DataSeed);
        return Enumerable.Range(0, steps).Select(_ => task.NextBatch(BatchSize)).ToList();
    }
}

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
    private const double LearningRate = 1e-3;
    private const long DataSeed = 7;

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
            "Check that pipelined training gives the same parameters as single-device training (up to float round-off): " +
            $"small mlp and cnn models, every schedule ({string.Join(", ", ScheduleGenerators.Names)}), " +
            $"stages {string.Join(",", StageCounts)} and micro-batches {string.Join(",", MicroBatchCounts)}; " +
            $"Adam lr {LearningRate:G}, cross-entropy, batch {BatchSize}. Exits with 1 if any check exceeds the tolerance.")
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
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> adam = ps => optim.Adam(ps, LearningRate);

        Console.WriteLine($"{"model",-6} {"schedule",-9} {"stages",6} {"micro-batches",13} {"max |diff|",11}  ok");
        int checks = 0, mismatches = 0;
        foreach (var (name, modelSeed) in new[] { ("mlp", 1L), ("cnn", 2L) })
        {
            var spec = BuiltInModels.ForVerification(name);
            var batches = Batches(spec, steps);
            try
            {
                foreach (var schedule in ScheduleGenerators.Names)
                foreach (int stages in StageCounts)
                foreach (int microBatches in MicroBatchCounts)
                {
                    var options = new PipelineOptions
                    {
                        Stages = spec.DefaultBalance is null ? stages : null,
                        Balance = spec.DefaultBalance?.Invoke(stages),
                        MicroBatches = microBatches,
                        Schedule = schedule,
                        ThreadsPerStage = 1,
                    };
                    double diff = EquivalenceCheck.MaxParameterDifference(
                        () => { torch.manual_seed(modelSeed); return spec.Create(); },
                        options, adam, (output, target) => nn.functional.cross_entropy(output, target), batches);
                    bool ok = diff <= tolerance;
                    checks++;
                    if (!ok) mismatches++;
                    Console.WriteLine($"{name,-6} {schedule,-9} {stages,6} {microBatches,13} {diff,11:0.00e+00}  {(ok ? "ok" : "FAIL")}");
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

    private static List<(Tensor Input, Tensor Target)> Batches(BuiltInModel spec, int steps)
    {
        using var task = new SyntheticClassification(spec.SampleShape, spec.Classes, DataSeed);
        return Enumerable.Range(0, steps).Select(_ => task.NextBatch(BatchSize)).ToList();
    }
}

using System.CommandLine;
using PipeSharp.Cli.Options;
using PipeSharp.Cli.Output;
using PipeSharp.Models;
using PipeSharp.Native;
using PipeSharp.Partitioning;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Cli.Commands;

/// <summary>
/// <c>pipesharp train</c>: trains a built-in model through a <see cref="Pipeline"/>: mlp or cnn on synthetic data
/// here, gpt (a language model) in <see cref="TrainGptCommand"/>.
/// </summary>
internal static class TrainCommand
{
    private static readonly Option<string> Model = new Option<string>("--model")
    {
        Description = "The built-in model: mlp (8 linear layers, 64 -> 256 -> 10) or cnn (the article's 10 convolution " +
                      "layers plus a classifier head, on 3x16x16 images), both on synthetic classification data; or " +
                      "gpt, a GPT language model, on a text file (--data) or on the built-in sorting task.",
        DefaultValueFactory = _ => "mlp",
    }.AcceptOnlyFromAmong([.. BuiltInModels.Names, TrainGptCommand.ModelName]);

    private static readonly Option<string> Optimizer = new Option<string>("--optimizer")
    {
        Description = "(mlp, cnn) adam, or sgd (with momentum 0.9). gpt always trains with AdamW.",
        DefaultValueFactory = _ => "adam",
    }.AcceptOnlyFromAmong("adam", "sgd");

    public static Command Create()
    {
        var command = new Command("train",
            "Train a built-in model cut into pipeline stages on ranks. mlp and cnn learn synthetic classification data; gpt " +
            "learns a text file (--data) or, without one, to sort digits. Prints the split, then per step the loss, " +
            "the throughput and how busy each stage was, then a summary; optionally the timeline of the last step " +
            "(--trace, --svg). Options marked (gpt) are for --model gpt only.")
        {
            Model, Optimizer,
        };
        foreach (var option in TrainOptions.All.Concat(ClusterOptions.All).Concat(GptOptions.All)) command.Options.Add(option);
        command.Options.Add(PlanOptions.Plan);
        foreach (var option in PlanOptions.Shared) command.Options.Add(option);
        command.SetAction(Run);
        return command;
    }

    private static int Run(ParseResult args)
    {
        bool gpt = args.GetValue(Model) == TrainGptCommand.ModelName;
        if (gpt && args.IsGiven(Optimizer))
            throw new ArgumentException("--optimizer is for mlp and cnn: gpt trains with AdamW (see --weight-decay, --clip).");
        if (!gpt && GptOptions.All.FirstOrDefault(args.IsGiven) is { } gptOnly)
            throw new ArgumentException($"{gptOnly.Name} is for --model gpt.");
        if (!PlanOptions.Auto(args) && PlanOptions.Shared.FirstOrDefault(args.IsGiven) is { } planOnly)
            throw new ArgumentException($"{planOnly.Name} is for --plan auto.");
        // Before MPI and the model: a signal during start-up is a stop too, honoured after the first step.
        using var signals = new StopSignals();
        return MpiRun.Execute(args, run =>
        {
            if (run is not null && PlanOptions.Auto(args))
                throw new ArgumentException(
                    "--plan auto runs in one process: every MPI process would measure its own plan. Run `pipesharp plan` first and " +
                    "give its choice (--ranks, --replicas, --microbatches, --schedule, --recompute, --balance) to train under mpirun.");
            CheckOutputFiles(args, gpt);
            return gpt ? TrainGptCommand.Run(args, run?.Cluster, signals) : RunClassifier(args, run?.Cluster, signals);
        });
    }

    /// <summary>
    /// Before anything is built: every file this process will write can be written (under mpirun, each rank checks its
    /// own: the timelines of every rank, the loss log and curve of rank 0).
    /// </summary>
    private static void CheckOutputFiles(ParseResult args, bool gpt)
    {
        OutputFile.CheckWritable(MpiRun.OutputFile(args.GetValue(TrainOptions.Trace), perRank: true), TrainOptions.Trace.Name);
        OutputFile.CheckWritable(MpiRun.OutputFile(args.GetValue(TrainOptions.Svg), perRank: true), TrainOptions.Svg.Name);
        if (!gpt) return;
        OutputFile.CheckWritable(MpiRun.OutputFile(args.GetValue(GptOptions.Log), perRank: false), GptOptions.Log.Name);
        OutputFile.CheckWritable(MpiRun.OutputFile(args.GetValue(GptOptions.LossCurve), perRank: false), GptOptions.LossCurve.Name);
    }

    /// <summary>Trains mlp or cnn on synthetic classification data; after a signal, stops after a step every rank agrees on.</summary>
    private static int RunClassifier(ParseResult args, Mpi.MpiCluster? cluster, StopSignals signals)
    {
        int steps = args.Given(TrainOptions.Steps) ?? 50, batchSize = args.Given(TrainOptions.BatchSize) ?? 64;
        var choice = TrainOptions.ReadSchedule(args, batchSize);

        var request = PlanOptions.Auto(args) ? PlanOptions.Request(args, batchSize) : null; // its errors before any work
        TorchNative.EnsureLoaded();
        var spec = BuiltInModels.ForTraining(args.GetValue(Model)!);
        string optimizerName = args.GetValue(Optimizer)!;
        double lr = args.Given(TrainOptions.LearningRate) ?? (optimizerName == "sgd" ? 0.05 : 1e-3);
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer = optimizerName == "sgd"
            ? ps => optim.SGD(ps, lr, momentum: 0.9)
            : ps => optim.Adam(ps, lr);
        long seed = args.GetValue(TrainOptions.Seed);
        // The balance modes that measure (auto, the default, and time) do it on a batch like the first, from a data
        // source of the same seed, so the training batches are the ones they would be without it.
        using var profileData = new SyntheticClassification(spec.SampleShape, spec.Classes, seed);
        var (profileInput, profileTarget) = profileData.NextBatch(batchSize);
        using var disposeProfile = profileInput;
        profileTarget.Dispose();
        PipelineOptions options;
        if (request is not null)
        {
            var notes = args.GetValue(TrainOptions.Json) ? Console.Error : Console.Out;
            var plan = PlanCommand.PlanClassifier(spec, seed, optimizer, request, PlanOptions.Cache(args), notes)[0];
            notes.WriteLine(PlanTable.Chosen(plan, tokens: false));
            options = plan.ToPipelineOptions(TrainOptions.Pipeline(args, choice, null, null, cluster)) with { Stop = signals.Request };
            choice = choice with { Schedule = plan.Schedule, MicroBatches = plan.MicroBatches };
        }
        else
        {
            var (stages, balance) = Split(args, choice);
            options = BalanceOptions.Apply(args, TrainOptions.Pipeline(args, choice, stages, balance, cluster), BalanceMode.Auto) with
            {
                Stop = signals.Request,
                ProfileInput = profileInput,
            };
        }

        torch.manual_seed(seed);
        Func<Tensor, Tensor, Tensor> crossEntropy = (output, target) => nn.functional.cross_entropy(output, target);
        // Built from the spec: each process (under MPI) builds only its own stages' layers, layer i seeded by (seed, i).
        using var pipe = new Pipeline(spec.Spec!(seed), options, crossEntropy, optimizer);
        using var data = new SyntheticClassification(spec.SampleShape, spec.Classes, seed);
        int ranks = pipe.Schedule.RankCount, pieces = pipe.Schedule.StageCount;
        int current = 0;
        FailureInjection.Arm(args.GetValue(ClusterOptions.InjectFailure), pipe, () => current);

        var output = CreateOutput(args, steps);
        output.Start(new TrainSetup(
            spec.Description,
            pipe.Stages.Select((s, i) => new StageInfo(s.Index, pipe.Schedule.StageToRank[s.Index], s.FirstLayer, s.LayerCount,
                pipe.Devices[i].ToString(), s.parameters().Sum(p => p.numel()))).ToList(),
            pipe.Schedule.Name + (pieces == ranks ? "" : $" ({pieces / ranks} stages per rank)") +
            (choice.File is null ? "" : $", from {choice.Schedule}"),
            options.MicroBatches, batchSize,
            optimizerName == "sgd" ? $"sgd, lr {lr:G}, momentum 0.9" : $"adam, lr {lr:G}",
            options.ThreadsPerRank, steps, seed));

        int done = 0;
        for (int step = 1; step <= steps && signals.ExitCode is null; step++)
        {
            current = step;
            var (input, target) = data.NextBatch(batchSize);
            using (input)
            using (target)
            {
                float loss = pipe.TrainStep(input, target);
                var stats = pipe.LastStep!;
                output.Step(new StepReport(step, loss, batchSize / stats.WallSeconds, RankBusy(pipe.Schedule, stats), stats.Skipped));
                TimelineFiles.WriteMoves(stats, pipe.Schedule, step, args, args.GetValue(TrainOptions.Json) ? Console.Error : Console.Out);
                done = step;
            }
        }
        bool interrupted = signals.ExitCode is not null;
        output.Finish(interrupted);
        if (MemoryLine.Of(pipe) is { } memory) (args.GetValue(TrainOptions.Json) ? Console.Error : Console.Out).WriteLine(memory);
        // With --json, stdout carries only the JSON lines.
        TimelineFiles.WriteStep(pipe.LastStep, pipe.Schedule, done,
            MpiRun.OutputFile(args.GetValue(TrainOptions.Trace), perRank: true), MpiRun.OutputFile(args.GetValue(TrainOptions.Svg), perRank: true),
            args.GetValue(TrainOptions.Json) ? Console.Error : Console.Out);
        return signals.ExitCode ?? ExitCodes.Success;
    }

    /// <summary>
    /// The ranks and layer counts to ask the library for. Counts given with --balance go through as they are (the library
    /// checks them against the ranks and stages per rank). Otherwise: --ranks, or 2, or the schedule file's count, and the
    /// library splits by the --balance mode (default auto; cnn's split of the article: --balance 2,2,2,2,3 on 5 ranks).
    /// </summary>
    private static (int? Ranks, int[]? Balance) Split(ParseResult args, ScheduleChoice choice)
    {
        int? ranks = args.Given(TrainOptions.Ranks);
        if (BalanceOptions.Counts(args) is { } counts) return (ranks, counts);
        return (ranks ?? choice.File?.RankCount ?? 2, null);
    }

    /// <summary>The share of the step each rank was computing, over all the stages it holds.</summary>
    private static IReadOnlyList<double> RankBusy(Schedules.Schedule schedule, Tracing.StepStatistics stats) =>
        Enumerable.Range(0, schedule.RankCount)
            .Select(r => stats.WallSeconds <= 0 ? 0 : Math.Min(1.0,
                Enumerable.Range(0, schedule.StageCount).Where(s => schedule.StageToRank[s] == r)
                    .Sum(s => stats.StageBusySeconds[s]) / stats.WallSeconds))
            .ToList();

    private static ITrainOutput CreateOutput(ParseResult args, int steps)
    {
        int? logEvery = args.Given(TrainOptions.LogEvery);
        if (args.GetValue(TrainOptions.Json)) return new JsonLinesOutput(Console.Out);
        if (Console.IsOutputRedirected) return new TextOutput(Console.Out, logEvery ?? 1, progress: null);
        return new TextOutput(Console.Out, logEvery ?? TrainOptions.TerminalLogInterval(steps), new ProgressLine(Console.Out, steps));
    }
}

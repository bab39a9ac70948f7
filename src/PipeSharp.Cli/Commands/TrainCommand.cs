using System.CommandLine;
using PipeSharp.Cli.Options;
using PipeSharp.Cli.Output;
using PipeSharp.Models;
using PipeSharp.Native;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Cli.Commands;

/// <summary><c>pipesharp train</c>: trains a built-in model on synthetic data through a <see cref="Pipeline"/>.</summary>
internal static class TrainCommand
{
    private static readonly Option<string> Model = new Option<string>("--model")
    {
        Description = "The built-in model: mlp (8 linear layers, 64 -> 256 -> 10) or cnn (the article's 10 convolution " +
                      "layers plus a classifier head, on 3x16x16 images).",
        DefaultValueFactory = _ => "mlp",
    }.AcceptOnlyFromAmong(BuiltInModels.Names);

    private static readonly Option<int> Stages = new("--stages", "-p")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Number of pipeline stages, one worker each [default: 2, or from --balance or the schedule file]. " +
                      "With chunks (interleaved, zb-v) the model is cut into stages x chunks pieces, so zb-v needs " +
                      "2 x stages layers (mlp: at most 4 stages, cnn: 5). Without --balance, mlp is split by parameter " +
                      "count; cnn with one chunk per stage as in the article (conv layers evenly, the head on the last " +
                      "stage; 5 stages: 2,2,2,2,3), with several chunks by parameter count.",
        HelpName = "N",
    };

    private static readonly Option<int[]?> Balance = CommaSeparated.Ints("--balance", "N,N,...",
        "Layers per model piece, in model order: stages x chunks entries adding up to the model's layer count " +
        "(mlp 8, cnn 11), e.g. 2,2,2,2,3 (5 stages, one chunk) or 1,1,1,1,1,1,1,1 (zb-v, 4 stages).", "2,2,2,2,3");

    private static readonly Option<int> MicroBatches = new("--microbatches", "-m")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Micro-batches each batch is split into (at most the batch size) [default: 4, or the schedule file's].",
        HelpName = "M",
    };

    private static readonly Option<string> Schedule = ScheduleOptions.Schedule(defaultName: "1f1b");

    private static readonly Option<int> Chunks = ScheduleOptions.Chunks();

    private static readonly Option<int> Steps = new("--steps")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Number of training steps (batches).",
        DefaultValueFactory = _ => 50,
        HelpName = "K",
    };

    private static readonly Option<int> BatchSize = new("--batch-size", "-b")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Samples per step.",
        DefaultValueFactory = _ => 64,
        HelpName = "B",
    };

    private static readonly Option<long> Seed = new("--seed")
    {
        CustomParser = Numbers.AnyWhole,
        Description = "Seed of the initial weights and of the synthetic data.",
        DefaultValueFactory = _ => 0,
        HelpName = "S",
    };

    private static readonly Option<string> Optimizer = new Option<string>("--optimizer")
    {
        Description = "adam, or sgd (with momentum 0.9).",
        DefaultValueFactory = _ => "adam",
    }.AcceptOnlyFromAmong("adam", "sgd");

    private static readonly Option<double> LearningRate = new("--lr")
    {
        CustomParser = Numbers.Positive,
        Description = "Learning rate [default: 1e-3 for adam, 0.05 for sgd].",
        HelpName = "X",
    };

    private static readonly Option<int> ThreadsPerStage = new("--threads-per-stage")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Intra-op threads of each stage's worker [default: processor count / stages, at least 1].",
        HelpName = "T",
    };

    private static readonly Option<string[]?> Devices = CommaSeparated.Strings("--devices", "DEV,DEV,...",
        "Device of each stage (cpu, cuda, cuda:N): one for all stages, or one per stage [default: cpu].", "cpu,cpu");

    private static readonly Option<bool> Json = new("--json")
    {
        Description = "Print one JSON object per step and nothing else: " +
                      "{\"step\":1,\"loss\":2.31,\"samples_per_s\":1234.5,\"stage_busy\":[0.81,0.77]}.",
    };

    private static readonly Option<string?> Trace = OutputFile.Create("--trace", "FILE.json",
        "After training, write the measured timeline of the last step (every forward and backward on every stage) " +
        "as a Chrome trace: open it in ui.perfetto.dev or chrome://tracing.");

    private static readonly Option<string?> Svg = OutputFile.Create("--svg", "FILE",
        "After training, draw the measured timeline of the last step as an SVG picture (compare with simulate --svg).");

    private static readonly Option<int> LogEvery = new("--log-every")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Print a step line every N steps [default: every step; on a terminal, about 50 lines per run " +
                      "under a progress line]. Not used with --json.",
        HelpName = "N",
    };

    public static Command Create()
    {
        var command = new Command("train",
            "Train a built-in model on synthetic classification data, split into pipeline stages. Prints the split, " +
            "then per step the loss, samples/s and how busy each stage was, then a summary; optionally the timeline " +
            "of the last step (--trace, --svg).")
        {
            Model, Stages, Balance, MicroBatches, Schedule, Chunks, Steps, BatchSize, Seed, Optimizer, LearningRate,
            ThreadsPerStage, Devices, Json, LogEvery, Trace, Svg,
        };
        command.SetAction(Run);
        return command;
    }

    private static int Run(ParseResult args)
    {
        string schedule = args.GetValue(Schedule)!;
        int? chunks = args.Given(Chunks);
        var file = ScheduleOptions.IsFile(schedule)
            ? ScheduleOptions.ReadFile(schedule, args.Given(Stages), args.Given(MicroBatches), chunks)
            : null;
        int steps = args.GetValue(Steps), batchSize = args.GetValue(BatchSize);
        int microBatches = args.Given(MicroBatches) ?? file?.MicroBatchCount ?? 4;
        // The library would find this only at the first step; say it before anything is built.
        if (batchSize < microBatches)
            throw new ArgumentException(
                $"the batch has {batchSize} samples (--batch-size) but the pipeline splits each batch into {microBatches} " +
                $"micro-batches (--microbatches): use a batch of at least {microBatches} samples or set --microbatches " +
                $"to at most {batchSize}.");

        TorchNative.EnsureLoaded();
        var spec = BuiltInModels.ForTraining(args.GetValue(Model)!);
        var (stages, balance) = Split(args, spec, schedule, chunks, file);
        var options = new PipelineOptions
        {
            Stages = stages,
            Chunks = chunks,
            Balance = balance,
            Devices = args.GetResult(Devices) is null ? null : args.GetValue(Devices),
            MicroBatches = microBatches,
            Schedule = schedule,
            ThreadsPerStage = args.Given(ThreadsPerStage),
        };
        string optimizerName = args.GetValue(Optimizer)!;
        double lr = args.Given(LearningRate) ?? (optimizerName == "sgd" ? 0.05 : 1e-3);
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer = optimizerName == "sgd"
            ? ps => optim.SGD(ps, lr, momentum: 0.9)
            : ps => optim.Adam(ps, lr);

        long seed = args.GetValue(Seed);
        torch.manual_seed(seed);
        using var model = spec.Create();
        using var pipe = new Pipeline(model, options, (output, target) => nn.functional.cross_entropy(output, target), optimizer);
        using var data = new SyntheticClassification(spec.SampleShape, spec.Classes, seed);
        int ranks = pipe.Schedule.RankCount, pieces = pipe.Schedule.StageCount;

        var output = CreateOutput(args, steps);
        output.Start(new TrainSetup(
            spec.Description,
            pipe.Stages.Select((s, i) => new StageInfo(i, pipe.Schedule.StageToRank[i], s.FirstLayer, s.LayerCount,
                pipe.Devices[i].ToString(), s.parameters().Sum(p => p.numel()))).ToList(),
            pipe.Schedule.Name + (pieces == ranks ? "" : $" ({pieces / ranks} chunks per stage)") + (file is null ? "" : $", from {schedule}"),
            options.MicroBatches, batchSize,
            optimizerName == "sgd" ? $"sgd, lr {lr:G}, momentum 0.9" : $"adam, lr {lr:G}",
            options.ThreadsPerStage, steps, seed));

        using var interrupt = new CtrlC();
        int done = 0;
        try
        {
            for (int step = 1; step <= steps; step++)
            {
                var (input, target) = data.NextBatch(batchSize);
                using (input)
                using (target)
                {
                    float loss = pipe.TrainStep(input, target, interrupt.Token);
                    var stats = pipe.LastStep!;
                    output.Step(new StepReport(step, loss, batchSize / stats.WallSeconds, RankBusy(pipe.Schedule, stats)));
                    done = step;
                }
                interrupt.Token.ThrowIfCancellationRequested();
            }
        }
        catch (OperationCanceledException) when (interrupt.Token.IsCancellationRequested)
        {
            output.Finish(interrupted: true);
            WriteTimeline(args, pipe, done);
            return ExitCodes.Interrupted;
        }
        output.Finish(interrupted: false);
        WriteTimeline(args, pipe, done);
        return ExitCodes.Success;
    }

    /// <summary>
    /// The stages and balance to ask the library for. A given --balance goes through as it is (the library checks it
    /// against the stages and chunks). Otherwise: --stages, or 2, or the schedule file's count; cnn with one chunk
    /// per stage gets the article's split, anything else is balanced by the library by parameter count.
    /// </summary>
    private static (int? Stages, int[]? Balance) Split(
        ParseResult args, BuiltInModel spec, string schedule, int? chunks, Schedules.Schedule? file)
    {
        int? stages = args.Given(Stages);
        if (args.GetResult(Balance) is not null) return (stages, args.GetValue(Balance));
        int p = stages ?? file?.RankCount ?? 2;
        bool oneChunk = file is null
            ? ScheduleGenerators.ChunksPerRank(schedule, chunks) == 1
            : file.StageCount == file.RankCount;
        return (p, oneChunk && spec.DefaultBalance is not null ? spec.DefaultBalance(p) : null);
    }

    /// <summary>The share of the step each stage worker (rank) was computing, over all the model pieces it holds.</summary>
    private static IReadOnlyList<double> RankBusy(Schedules.Schedule schedule, Tracing.StepStatistics stats) =>
        Enumerable.Range(0, schedule.RankCount)
            .Select(r => stats.WallSeconds <= 0 ? 0 : Math.Min(1.0,
                Enumerable.Range(0, schedule.StageCount).Where(s => schedule.StageToRank[s] == r)
                    .Sum(s => stats.StageBusySeconds[s]) / stats.WallSeconds))
            .ToList();

    /// <summary>Writes the measured timeline of the last step to the --trace and --svg files.</summary>
    private static void WriteTimeline(ParseResult args, Pipeline pipe, int step)
    {
        string? trace = args.GetValue(Trace), svg = args.GetValue(Svg);
        if ((trace is null && svg is null) || pipe.LastStep is not { } last || step == 0) return;
        // With --json, stdout carries only the JSON lines.
        var note = args.GetValue(Json) ? Console.Error : Console.Out;
        int ranks = pipe.Schedule.RankCount, pieces = pipe.Schedule.StageCount;
        if (trace is not null)
        {
            TimelineFiles.WriteTrace(trace, last.Timeline, last.Messages);
            note.WriteLine($"wrote {trace}: timeline of step {step} (open in ui.perfetto.dev)");
        }
        if (svg is not null)
        {
            string title = $"measured: {pipe.Schedule.Name}, {TimelineFiles.Shape(ranks, pieces)}, {pipe.Schedule.MicroBatchCount} micro-batches";
            TimelineFiles.WriteSvg(svg, last.Timeline, ranks, title);
            note.WriteLine($"wrote {svg}: timeline of step {step}");
        }
    }

    private static ITrainOutput CreateOutput(ParseResult args, int steps)
    {
        if (args.GetValue(Json)) return new JsonLinesOutput(Console.Out);
        if (Console.IsOutputRedirected) return new TextOutput(Console.Out, args.Given(LogEvery) ?? 1, progress: null);
        return new TextOutput(Console.Out, args.Given(LogEvery) ?? TerminalLogInterval(steps), new ProgressLine(Console.Out, steps));
    }

    /// <summary>About 50 step lines per run, at round step numbers (1, 2, 5, 10, 20, 50, ...).</summary>
    private static int TerminalLogInterval(int steps)
    {
        int interval = 1;
        while (steps / interval > 50)
            interval = interval.ToString()[0] == '2' ? interval / 2 * 5 : interval * 2;
        return interval;
    }

    /// <summary>Turns Ctrl+C into a cancellation the pipeline honours, so an interrupted run still prints its summary.</summary>
    private sealed class CtrlC : IDisposable
    {
        private readonly CancellationTokenSource _source = new();

        public CtrlC() => Console.CancelKeyPress += OnCancel;

        public CancellationToken Token => _source.Token;

        private void OnCancel(object? sender, ConsoleCancelEventArgs e)
        {
            // The first Ctrl+C stops after the current step's clean-up; a second one ends the process.
            if (_source.IsCancellationRequested) return;
            e.Cancel = true;
            _source.Cancel();
        }

        public void Dispose()
        {
            Console.CancelKeyPress -= OnCancel;
            _source.Dispose();
        }
    }
}

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
        Description = "Number of pipeline stages [default: 2, or the length of --balance]. Without --balance, mlp is " +
                      "split by parameter count and cnn as in the article: the convolution layers evenly, the head on " +
                      "the last stage (5 stages: 2,2,2,2,3).",
        HelpName = "N",
    };

    private static readonly Option<int[]?> Balance = CommaSeparated.Ints("--balance", "N,N,...",
        "Layers per stage, in order; must add up to the model's layer count (mlp 8, cnn 11), e.g. 2,2,2,2,3.", "2,2,2,2,3");

    private static readonly Option<int> MicroBatches = new("--microbatches", "-m")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Micro-batches each batch is split into (at most the batch size).",
        DefaultValueFactory = _ => 4,
        HelpName = "M",
    };

    private static readonly Option<string> Schedule = new Option<string>("--schedule")
    {
        Description = "Pipeline schedule: gpipe (all forwards, then all backwards) or 1f1b (warm-up, then alternate " +
                      "one forward and one backward; same result, less activation memory).",
        DefaultValueFactory = _ => "1f1b",
    }.AcceptOnlyFromAmong([.. ScheduleGenerators.Names]);

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
            "then per step the loss, samples/s and how busy each stage was, then a summary.")
        {
            Model, Stages, Balance, MicroBatches, Schedule, Steps, BatchSize, Seed, Optimizer, LearningRate,
            ThreadsPerStage, Devices, Json, LogEvery,
        };
        command.SetAction(Run);
        return command;
    }

    private static int Run(ParseResult args)
    {
        int steps = args.GetValue(Steps), batchSize = args.GetValue(BatchSize), microBatches = args.GetValue(MicroBatches);
        // The library would find this only at the first step; say it before anything is built.
        if (batchSize < microBatches)
            throw new ArgumentException(
                $"the batch has {batchSize} samples (--batch-size) but the pipeline splits each batch into {microBatches} " +
                $"micro-batches (--microbatches): use a batch of at least {microBatches} samples or set --microbatches " +
                $"to at most {batchSize}.");

        TorchNative.EnsureLoaded();
        var spec = BuiltInModels.ForTraining(args.GetValue(Model)!);
        int[]? balance = args.GetResult(Balance) is null ? null : args.GetValue(Balance);
        int? stages = Given(args, Stages);
        if (balance is null && spec.DefaultBalance is not null)
        {
            balance = spec.DefaultBalance(stages ?? 2);
            stages = null;
        }
        else if (balance is null)
        {
            stages ??= 2;
        }

        var options = new PipelineOptions
        {
            Stages = stages,
            Balance = balance,
            Devices = args.GetResult(Devices) is null ? null : args.GetValue(Devices),
            MicroBatches = microBatches,
            Schedule = args.GetValue(Schedule)!,
            ThreadsPerStage = Given(args, ThreadsPerStage),
        };
        string optimizerName = args.GetValue(Optimizer)!;
        double lr = Given(args, LearningRate) ?? (optimizerName == "sgd" ? 0.05 : 1e-3);
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer = optimizerName == "sgd"
            ? ps => optim.SGD(ps, lr, momentum: 0.9)
            : ps => optim.Adam(ps, lr);

        long seed = args.GetValue(Seed);
        torch.manual_seed(seed);
        using var model = spec.Create();
        using var pipe = new Pipeline(model, options, (output, target) => nn.functional.cross_entropy(output, target), optimizer);
        using var data = new SyntheticClassification(spec.SampleShape, spec.Classes, seed);

        var output = CreateOutput(args, steps);
        output.Start(new TrainSetup(
            spec.Description,
            pipe.Stages.Select((s, i) => new StageInfo(i, s.FirstLayer, s.LayerCount, pipe.Devices[i].ToString(),
                s.parameters().Sum(p => p.numel()))).ToList(),
            pipe.Schedule.Name, options.MicroBatches, batchSize,
            optimizerName == "sgd" ? $"sgd, lr {lr:G}, momentum 0.9" : $"adam, lr {lr:G}",
            options.ThreadsPerStage, steps, seed));

        using var interrupt = new CtrlC();
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
                    output.Step(new StepReport(step, loss, batchSize / stats.WallSeconds, stats.StageBusyFraction));
                }
                interrupt.Token.ThrowIfCancellationRequested();
            }
        }
        catch (OperationCanceledException) when (interrupt.Token.IsCancellationRequested)
        {
            output.Finish(interrupted: true);
            return ExitCodes.Interrupted;
        }
        output.Finish(interrupted: false);
        return ExitCodes.Success;
    }

    private static ITrainOutput CreateOutput(ParseResult args, int steps)
    {
        if (args.GetValue(Json)) return new JsonLinesOutput(Console.Out);
        if (Console.IsOutputRedirected) return new TextOutput(Console.Out, Given(args, LogEvery) ?? 1, progress: null);
        return new TextOutput(Console.Out, Given(args, LogEvery) ?? TerminalLogInterval(steps), new ProgressLine(Console.Out, steps));
    }

    /// <summary>About 50 step lines per run, at round step numbers (1, 2, 5, 10, 20, 50, ...).</summary>
    private static int TerminalLogInterval(int steps)
    {
        int interval = 1;
        while (steps / interval > 50)
            interval = interval.ToString()[0] == '2' ? interval / 2 * 5 : interval * 2;
        return interval;
    }

    /// <summary>The option's value if it was on the command line, else null (the default depends on other options).</summary>
    private static T? Given<T>(ParseResult args, Option<T> option) where T : struct =>
        args.GetResult(option) is { Implicit: false } ? args.GetValue(option) : null;

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

using System.CommandLine;
using PipeSharp.Runtime;
using PipeSharp.Schedules;

namespace PipeSharp.Cli.Options;

/// <summary>The schedule a <c>train</c> run asked for: a generator name or a schedule file, and the micro-batch count.</summary>
internal sealed record ScheduleChoice(string Schedule, int? StagesPerRank, Schedule? File, int MicroBatches);

/// <summary>
/// The options of <c>train</c> that every model uses (the pipeline, the run's length, the output), and helpers to read
/// them. Defaults that differ between mlp/cnn and gpt are not set here: read them with <c>Given(...) ?? default</c>.
/// </summary>
internal static class TrainOptions
{
    public static readonly Option<int> Ranks = ScheduleOptions.Ranks(
        "Number of pipeline ranks (workers) per replica [default: 2, or from --balance or the schedule file]. " +
        "With several stages per rank (interleaved, zb-v) the model is cut into ranks x stages-per-rank stages, so zb-v needs " +
        "2 x ranks layers (mlp: at most 4 ranks, cnn: 5). The split into stages: --balance.");

    public static readonly Option<int> MicroBatches = new("--microbatches", "-m")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Micro-batches each batch is split into (at most the batch size) [default: 4; 1 with --stages 1, which has " +
                      "no pipeline to fill; or the schedule file's].",
        HelpName = "M",
    };

    public static readonly Option<string> Schedule = ScheduleOptions.Schedule(defaultName: "1f1b");

    public static readonly Option<int> StagesPerRank = ScheduleOptions.StagesPerRank();

    public static readonly Option<int> Steps = new("--steps")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Number of training steps (batches) [default: 50; gpt: 500, sorting task 1000]. gpt: the learning-rate schedule " +
                      "spans them, so resume with the same --steps.",
        HelpName = "K",
    };

    public static readonly Option<int> BatchSize = new("--batch-size", "-b")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Samples (gpt: sequences) per step [default: 64; gpt: 32, sorting task 16].",
        HelpName = "B",
    };

    public static readonly Option<long> Seed = new("--seed")
    {
        CustomParser = Numbers.AnyWhole,
        Description = "Seed of the initial weights and of the data (synthetic samples, text windows or sorting problems).",
        DefaultValueFactory = _ => 0,
        HelpName = "S",
    };

    public static readonly Option<double> LearningRate = new("--lr")
    {
        CustomParser = Numbers.Positive,
        Description = "Learning rate [default: 1e-3 for adam, 0.05 for sgd; gpt: 6e-3, sorting task 1e-3, the peak of warm-up and cosine decay].",
        HelpName = "X",
    };

    public static readonly Option<int> ThreadsPerRank = new("--threads-per-rank", RenamedOptions.OldName("--threads-per-rank"))
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Intra-op threads of each rank's worker [default: processor count / ranks on this host, at least 1]. " +
                      "(--threads-per-stage is its old name.)",
        HelpName = "T",
    };

    public static readonly Option<string[]?> Devices = CommaSeparated.Strings("--devices", "DEV,DEV,...",
        "Device of each rank (cpu, cuda, cuda:N): one for all ranks, or one per rank [default: cpu].", "cpu,cpu");

    public static readonly Option<bool> Json = new("--json")
    {
        Description = "Print one JSON object per step on stdout and nothing else there: " +
                      "{\"step\":1,\"loss\":2.31,\"samples_per_s\":1234.5,\"stage_busy\":[0.81,0.77]}; gpt: " +
                      "{\"step\":1,\"loss\":4.2,\"lr\":1e-05,\"tokens_per_s\":5120.3,\"stage_busy\":[0.81,0.77]," +
                      "\"grad_norm\":1.9,\"val_loss\":null} (gpt's notes and summary go to stderr); a skipped step (--on-nonfinite " +
                      "skip) adds \"skipped\":true.",
    };

    public static readonly Option<string> OnNonFinite = new Option<string>("--on-nonfinite")
    {
        Description = "When a step's loss or global gradient norm is NaN or infinite: stop (with an error naming the step; " +
                      "no parameter has changed, and a gpt run keeps the checkpoints it saved) or skip (zero the gradients, " +
                      "take no optimizer step, and go on with the next step and batch; the step line says skipped).",
        DefaultValueFactory = _ => "stop",
    }.AcceptOnlyFromAmong("stop", "skip");

    public static readonly Option<Recomputation> Recompute = new("--recompute")
    {
        Description = "Activation recomputation: none (every forward keeps its graph until its backward), full (each stage keeps " +
                      "only its inputs and runs its forward again in its backward), or model layer indices separated by commas, " +
                      "each recomputed on its own (gpt: 1,2,3,4 are the blocks of a 4-layer model; 0 is the embeddings). " +
                      "The trained parameters are the same; the activation memory is smaller, a step slower.",
        HelpName = "none|full|LIST",
        DefaultValueFactory = _ => Recomputation.None,
        CustomParser = result =>
        {
            string text = result.Tokens.Count == 1 ? result.Tokens[0].Value : "";
            try
            {
                return Recomputation.Parse(text);
            }
            catch (Exception e) when (e is FormatException or ArgumentException)
            {
                result.AddError($"--recompute: {e.Message}");
                return Recomputation.None;
            }
        },
    };

    public static readonly Option<string?> Trace = OutputFile.Create("--trace", "FILE.json",
        "After training, write the measured timeline of the last step (every forward and backward on every stage) " +
        "as a Chrome trace: open it in ui.perfetto.dev or chrome://tracing. gpt: the last step that did not measure " +
        "the validation loss.");

    public static readonly Option<string?> Svg = OutputFile.Create("--svg", "FILE",
        "After training, draw the measured timeline of the last step as an SVG picture (compare with simulate --svg). " +
        "gpt: the last step that did not measure the validation loss.");

    public static readonly Option<int> LogEvery = new("--log-every")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Print a step line every N steps [default: every step; on a terminal, about 50 lines per run " +
                      "(gpt: every --eval-every steps) under a progress line]. Not used with --json.",
        HelpName = "N",
    };

    public static readonly Option<long[]?> MemoryPerDevice = new("--memory-per-device")
    {
        Description = "Memory each rank's device may use: one size for all ranks or one per rank, e.g. 2GB or 2GB,1.5GB " +
                      "(KB, MB, GB: powers of 1000; KiB, MiB, GiB: of 1024). Before training, each rank's peak (parameters, " +
                      "gradients, optimizer state, activations at the schedule's peak, boundary buffers) is predicted and a plan " +
                      "that does not fit is refused, naming what would fit; the summary prints the measured peak beside the " +
                      "prediction (docs/memory.md).",
        HelpName = "SIZE[,SIZE...]",
        CustomParser = result =>
        {
            try
            {
                return PipeSharp.Memory.MemorySize.ParseList(string.Join(" ", result.Tokens.Select(t => t.Value)), "--memory-per-device").ToArray();
            }
            catch (ArgumentException e)
            {
                result.AddError(e.Message.Split(" (Parameter")[0]);
                return null;
            }
        },
    };

    public static readonly Option<bool> Rebalance = new("--rebalance")
    {
        Description = "Move layers between ranks while training when one rank is slower than the others: after each step every " +
                      "rank's busy time is measured; when the slowest is more than --rebalance-threshold above the mean for " +
                      "--rebalance-steps steps in a row, the split is computed again from the measured speeds and layers move " +
                      "(parameters, gradients and optimizer state) if that is predicted to save at least 5% of the step. Each move " +
                      "is printed, and marked in the --svg timeline of its step (docs/rebalancing.md).",
    };

    public static readonly Option<double> RebalanceThreshold = new("--rebalance-threshold")
    {
        CustomParser = Numbers.NonNegative,
        Description = "With --rebalance: how far above the mean the slowest rank's busy time must be, as a share [default: 0.1].",
        DefaultValueFactory = _ => 0.1,
        HelpName = "SHARE",
    };

    public static readonly Option<int> RebalanceSteps = new("--rebalance-steps")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "With --rebalance: for how many consecutive steps [default: 3].",
        DefaultValueFactory = _ => 3,
        HelpName = "N",
    };

    /// <summary>Every option above, in help order.</summary>
    public static IEnumerable<Option> All =>
    [
        Ranks, BalanceOptions.Balance, BalanceOptions.DeviceSpeeds, MicroBatches, Schedule, StagesPerRank, Steps, BatchSize, Seed, LearningRate,
        ThreadsPerRank, Devices, Recompute, Json, LogEvery, OnNonFinite, Trace, Svg, MemoryPerDevice, Rebalance, RebalanceThreshold, RebalanceSteps,
    ];

    /// <summary>
    /// The schedule (name or file), stages per rank and micro-batches; checks that a batch of <paramref name="batchSize"/>
    /// can be split into that many micro-batches, which the library would find only at the first step.
    /// </summary>
    public static ScheduleChoice ReadSchedule(ParseResult args, int batchSize)
    {
        string schedule = args.GetValue(Schedule)!;
        int? perRank = args.Given(StagesPerRank);
        var file = ScheduleOptions.IsFile(schedule)
            ? ScheduleOptions.ReadFile(schedule, args.Given(Ranks), args.Given(MicroBatches), perRank)
            : null;
        // One stage has no pipeline to fill: splitting its batch would only make its matrix products smaller (with 2
        // intra-op threads, 4 micro-batches of the GPT of issue 11 trained at 0.83 of the whole batch's rate).
        int microBatches = args.Given(MicroBatches) ?? file?.MicroBatchCount ?? (args.Given(Ranks) == 1 ? 1 : 4);
        if (batchSize < microBatches)
            throw new ArgumentException(
                $"the batch has {batchSize} samples (--batch-size) but the pipeline splits each batch into {microBatches} " +
                $"micro-batches (--microbatches): use a batch of at least {microBatches} samples or set --microbatches " +
                $"to at most {batchSize}.");
        return new ScheduleChoice(schedule, perRank, file, microBatches);
    }

    /// <summary>The pipeline options of the run; <paramref name="ranks"/> and <paramref name="balance"/> as decided by the model.</summary>
    public static PipelineOptions Pipeline(ParseResult args, ScheduleChoice choice, int? ranks, int[]? balance, Mpi.MpiCluster? cluster) => new()
    {
        Replicas = args.GetValue(ClusterOptions.Replicas),
        Backend = cluster,
        Ranks = ranks,
        StagesPerRank = choice.StagesPerRank,
        Balance = balance,
        Devices = args.GetResult(Devices) is null ? null : args.GetValue(Devices),
        MicroBatches = choice.MicroBatches,
        Schedule = choice.Schedule,
        ThreadsPerRank = args.Given(ThreadsPerRank),
        NonFiniteGradients = args.GetValue(OnNonFinite) == "skip" ? NonFiniteGradientPolicy.SkipStep : NonFiniteGradientPolicy.Throw,
        Recomputation = args.GetValue(Recompute) ?? Recomputation.None,
        MemoryPerDevice = args.GetResult(MemoryPerDevice) is null ? null : args.GetValue(MemoryPerDevice),
        Rebalancing = args.GetValue(Rebalance)
            ? new RebalancingOptions { Threshold = args.GetValue(RebalanceThreshold), Steps = args.GetValue(RebalanceSteps) }
            : null,
    };

    /// <summary>About 50 step lines per run, at round step numbers (1, 2, 5, 10, 20, 50, ...).</summary>
    public static int TerminalLogInterval(int steps)
    {
        int interval = 1;
        while (steps / interval > 50)
            interval = interval.ToString()[0] == '2' ? interval / 2 * 5 : interval * 2;
        return interval;
    }
}

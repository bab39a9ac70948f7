using System.CommandLine;
using PipeSharp.Planning;
using PipeSharp.Runtime;

namespace PipeSharp.Cli.Options;

/// <summary>
/// The options of <c>plan</c> and of <c>train --plan auto</c>, and the plan request they make. The pipeline options
/// of <c>train</c> given with them (--ranks, --replicas, --microbatches, --schedule, --recompute, --threads-per-rank,
/// --devices, --memory-per-device) are fixed constraints of the search; --balance and --stages-per-rank, which the
/// plan chooses, and schedule files are refused.
/// </summary>
internal static class PlanOptions
{
    public static readonly Option<string?> Plan = new Option<string?>("--plan")
    {
        Description = "auto: profile the model (cached), search ranks x replicas x micro-batches x schedule x recomputation x threads " +
                      "for the fastest layout that fits --memory-per-device, print it, and train with it. --ranks, --replicas, " +
                      "--microbatches, --schedule, --recompute and --threads-per-rank given with it are kept fixed (docs/planning.md).",
        HelpName = "auto",
    }.AcceptOnlyFromAmong("auto");

    public static readonly Option<int> Top = new("--top")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "How many of the best plans to print.",
        DefaultValueFactory = _ => 10,
        HelpName = "N",
    };

    public static readonly Option<int> Processors = new("--processors")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Processors the ranks share: ranks x replicas x threads per rank is at most this [default: this machine's processor count].",
        HelpName = "P",
    };

    public static readonly Option<string?> ProfileCache = new("--profile-cache")
    {
        Description = "Folder of the cached profiles [default: ~/.cache/pipesharp/profiles, or $XDG_CACHE_HOME/pipesharp/profiles].",
        HelpName = "DIR",
    };

    public static readonly Option<bool> Reprofile = new("--reprofile")
    {
        Description = "Measure the profiles again and overwrite the cached ones (after changing something the cache key does not see, or to replace a damaged file).",
    };

    /// <summary>The options <c>plan</c> and <c>train</c> share, beyond train's own.</summary>
    public static IEnumerable<Option> Shared => [Processors, ProfileCache, Reprofile];

    /// <summary>True for <c>train --plan auto</c>.</summary>
    public static bool Auto(ParseResult args) => args.GetValue(Plan) == "auto";

    /// <summary>The cache the options name.</summary>
    public static ProfileCache Cache(ParseResult args) => new(args.GetValue(ProfileCache)) { Reprofile = args.GetValue(Reprofile) };

    /// <summary>The search's request: the batch and devices, with every pipeline option given kept fixed.</summary>
    public static PlanRequest Request(ParseResult args, int batchSize)
    {
        if (args.IsGiven(BalanceOptions.Balance))
            throw new ArgumentException("--balance cannot be combined with --plan auto: the plan chooses the split; leave --balance out, or leave out --plan.");
        if (args.IsGiven(BalanceOptions.DeviceSpeeds))
            throw new ArgumentException("--device-speeds cannot be combined with --plan auto: the plan measures the devices it plans for; leave --device-speeds out, or leave out --plan.");
        if (args.IsGiven(TrainOptions.StagesPerRank))
            throw new ArgumentException("--stages-per-rank cannot be combined with --plan auto: the plan chooses it with the schedule; leave it out.");
        string? schedule = args.IsGiven(TrainOptions.Schedule) ? args.GetValue(TrainOptions.Schedule) : null;
        if (schedule is not null && ScheduleOptions.IsFile(schedule))
            throw new ArgumentException($"--schedule {schedule} is a schedule file: the plan searches the generated schedules; give one of their names or leave --schedule out.");
        var recompute = args.IsGiven(TrainOptions.Recompute) ? args.GetValue(TrainOptions.Recompute) : null;
        if (recompute is not null && !recompute.IsNone && !recompute.Equals(Recomputation.Full))
            throw new ArgumentException($"--recompute {recompute} with --plan auto: the plan tries none and full; give one of them or leave it out.");
        return new PlanRequest
        {
            BatchSize = batchSize,
            Devices = args.GetResult(TrainOptions.Devices) is null ? null : args.GetValue(TrainOptions.Devices),
            MemoryPerDevice = args.GetResult(TrainOptions.MemoryPerDevice) is null ? null : args.GetValue(TrainOptions.MemoryPerDevice),
            Processors = args.Given(Processors),
            Ranks = args.Given(TrainOptions.Ranks),
            Replicas = args.IsGiven(ClusterOptions.Replicas) ? args.GetValue(ClusterOptions.Replicas) : null,
            MicroBatches = args.Given(TrainOptions.MicroBatches),
            Schedule = schedule,
            Recomputation = recompute,
            ThreadsPerRank = args.Given(TrainOptions.ThreadsPerRank),
        };
    }
}

using System.CommandLine;
using PipeSharp.Schedules;

namespace PipeSharp.Cli.Options;

/// <summary>
/// The options <c>train</c> and <c>simulate</c> share to pick a schedule: <c>--schedule</c>, <c>--ranks</c> and
/// <c>--stages-per-rank</c>.
/// </summary>
internal static class ScheduleOptions
{
    /// <summary>One line per schedule, for the help of <c>--schedule</c>.</summary>
    public const string NamesHelp =
        "gpipe (all forwards, then all backwards), 1f1b (after a warm-up alternate one forward and one backward: less " +
        "activation memory), interleaved (1F1B with --stages-per-rank stages on each rank, default 2: smaller bubble; " +
        "micro-batches must be a multiple of ranks), zb-h1 (zero bubble: backward split into input grad I and " +
        "weight grad W, W fills the bubble; 1F1B's activation memory, W inputs kept longer), zb-v (zero bubble with 2 stages per rank in a V shape), " +
        "or the path of a schedule file (see simulate --save-schedule).";

    /// <summary><c>--schedule NAME|FILE</c>: a generator name or an existing schedule file, checked when parsing.</summary>
    public static Option<string> Schedule(string? defaultName)
    {
        var option = new Option<string>("--schedule")
        {
            Description = "Pipeline schedule: " + NamesHelp,
            HelpName = "NAME|FILE",
        };
        if (defaultName is not null) option.DefaultValueFactory = _ => defaultName;
        else option.Required = true;
        option.CompletionSources.Add([.. ScheduleGenerators.Names]);
        option.Validators.Add(result =>
        {
            string value = result.GetValueOrDefault<string>() ?? "";
            if (!IsName(value) && !IsFile(value))
                result.AddError($"--schedule: '{value}' is neither a schedule name ({string.Join(", ", ScheduleGenerators.Names)}) " +
                                "nor an existing schedule file.");
        });
        return option;
    }

    /// <summary><c>--ranks P</c> (old name <c>--stages</c>): pipeline ranks (workers) per replica.</summary>
    public static Option<int> Ranks(string description, int? defaultValue = null)
    {
        var option = new Option<int>("--ranks", "-p", RenamedOptions.OldName("--ranks"))
        {
            CustomParser = Numbers.AtLeast(1),
            Description = description + " (--stages is its old name.)",
            HelpName = "P",
        };
        if (defaultValue is { } d) option.DefaultValueFactory = _ => d;
        return option;
    }

    /// <summary><c>--stages-per-rank V</c> (old name <c>--chunks</c>): stages each rank holds.</summary>
    public static Option<int> StagesPerRank() => new("--stages-per-rank", RenamedOptions.OldName("--stages-per-rank"))
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Stages each rank holds, for the interleaved schedule [default: 2]. zb-v always uses 2, " +
                      "gpipe, 1f1b and zb-h1 1; a schedule file fixes its own. (--chunks is its old name.)",
        HelpName = "V",
    };

    /// <summary>True when <paramref name="value"/> names a file rather than a generator (as the library decides).</summary>
    public static bool IsFile(string value) => File.Exists(value);

    private static bool IsName(string value) =>
        ScheduleGenerators.Names.Contains(value.Trim().ToLowerInvariant());

    /// <summary>
    /// Reads (without validating) the schedule file <paramref name="path"/>, and checks that the counts given on the
    /// command line, if any, are the file's: a file fixes ranks, stages per rank and micro-batches.
    /// </summary>
    public static Schedule ReadFile(string path, int? ranks, int? microBatches, int? stagesPerRank)
    {
        var schedule = ScheduleFile.Parse(File.ReadAllText(path), path);
        if (stagesPerRank is not null)
            throw new ArgumentException($"--stages-per-rank is for schedule names; the file '{path}' places its own {schedule.StageCount} stages on {schedule.RankCount} ranks.");
        if (ranks is { } p && p != schedule.RankCount)
            throw new ArgumentException($"--ranks is {p} but the file '{path}' has {schedule.RankCount} ranks: leave --ranks out.");
        if (microBatches is { } m && m != schedule.MicroBatchCount)
            throw new ArgumentException($"--microbatches is {m} but the file '{path}' has {schedule.MicroBatchCount}: leave --microbatches out.");
        return schedule;
    }
}

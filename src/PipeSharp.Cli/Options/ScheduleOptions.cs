using System.CommandLine;
using PipeSharp.Schedules;

namespace PipeSharp.Cli.Options;

/// <summary>The options <c>train</c> and <c>simulate</c> share to pick a schedule: <c>--schedule</c> and <c>--chunks</c>.</summary>
internal static class ScheduleOptions
{
    /// <summary>One line per schedule, for the help of <c>--schedule</c>.</summary>
    public const string NamesHelp =
        "gpipe (all forwards, then all backwards), 1f1b (after a warm-up alternate one forward and one backward: less " +
        "activation memory), interleaved (1F1B with --chunks model pieces per stage, default 2: smaller bubble; " +
        "micro-batches must be a multiple of stages), zb-h1 (zero bubble: backward split into input grad I and " +
        "weight grad W, W fills the bubble; 1F1B's activation memory, W inputs kept longer), zb-v (zero bubble with 2 pieces per stage in a V shape), " +
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

    /// <summary><c>--chunks V</c>: model pieces per stage worker.</summary>
    public static Option<int> Chunks() => new("--chunks")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Model pieces (chunks) per stage for the interleaved schedule [default: 2]. zb-v always uses 2, " +
                      "gpipe, 1f1b and zb-h1 1; a schedule file fixes its own.",
        HelpName = "V",
    };

    /// <summary>True when <paramref name="value"/> names a file rather than a generator (as the library decides).</summary>
    public static bool IsFile(string value) => File.Exists(value);

    private static bool IsName(string value) =>
        ScheduleGenerators.Names.Contains(value.Trim().ToLowerInvariant());

    /// <summary>
    /// Reads (without validating) the schedule file <paramref name="path"/>, and checks that the counts given on the
    /// command line, if any, are the file's: a file fixes stages, chunks and micro-batches.
    /// </summary>
    public static Schedule ReadFile(string path, int? stages, int? microBatches, int? chunks)
    {
        var schedule = ScheduleFile.Parse(File.ReadAllText(path), path);
        if (chunks is not null)
            throw new ArgumentException($"--chunks is for schedule names; the file '{path}' places its own {schedule.StageCount} model pieces on {schedule.RankCount} stages.");
        if (stages is { } p && p != schedule.RankCount)
            throw new ArgumentException($"--stages is {p} but the file '{path}' has {schedule.RankCount} stages (ranks): leave --stages out.");
        if (microBatches is { } m && m != schedule.MicroBatchCount)
            throw new ArgumentException($"--microbatches is {m} but the file '{path}' has {schedule.MicroBatchCount}: leave --microbatches out.");
        return schedule;
    }
}

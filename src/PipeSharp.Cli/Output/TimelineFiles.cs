using PipeSharp.Schedules;
using PipeSharp.Tracing;

namespace PipeSharp.Cli.Output;

/// <summary>Writes a timeline (simulated or measured) as an SVG picture or a Chrome/Perfetto trace.</summary>
internal static class TimelineFiles
{
    /// <summary>Writes <see cref="TimelineSvg"/>'s picture of <paramref name="timeline"/> (times in seconds) to <paramref name="path"/>.</summary>
    public static void WriteSvg(string path, IReadOnlyList<ActionTiming> timeline, int rankCount, string title) =>
        File.WriteAllText(path, TimelineSvg.Render(timeline, rankCount, title));

    /// <summary>Writes <paramref name="timeline"/> and the messages between ranks (times in seconds) as Chrome trace-event JSON.</summary>
    public static void WriteTrace(string path, IReadOnlyList<ActionTiming> timeline, IReadOnlyList<MessageTiming>? messages = null) =>
        ChromeTrace.Save(path, timeline, messages);

    /// <summary>Scales a timeline's times, e.g. from milliseconds to the seconds the renderers expect.</summary>
    public static IReadOnlyList<ActionTiming> Scale(IReadOnlyList<ActionTiming> timeline, double factor) =>
        timeline.Select(t => t with { Start = t.Start * factor, End = t.End * factor }).ToList();

    /// <summary>
    /// Writes the measured timeline <paramref name="last"/> of training step <paramref name="step"/> of a pipeline
    /// running <paramref name="schedule"/> to the given trace and SVG files, if any, and says so on <paramref name="note"/>.
    /// </summary>
    public static void WriteStep(StepStatistics? last, Schedule schedule, int step, string? trace, string? svg, TextWriter note)
    {
        if ((trace is null && svg is null) || last is null || step == 0) return;
        int ranks = schedule.RankCount, pieces = schedule.StageCount;
        if (trace is not null)
        {
            ChromeTrace.Save(trace, last.Timeline, last.Messages, last.Moves);
            note.WriteLine($"wrote {trace}: timeline of step {step} (open in ui.perfetto.dev)");
        }
        if (svg is not null)
        {
            string title = $"measured: {schedule.Name}, {Shape(ranks, pieces)}, {schedule.MicroBatchCount} micro-batches";
            File.WriteAllText(svg, TimelineSvg.Render(last.Timeline, ranks, title, last.Moves));
            note.WriteLine($"wrote {svg}: timeline of step {step}");
        }
    }

    /// <summary>
    /// Prints the layers that moved after step <paramref name="step"/> (<c>--rebalance</c>), and with <c>--svg FILE</c> writes
    /// that step's timeline, its moves marked, to FILE with <c>.step-N</c> before the extension.
    /// </summary>
    public static void WriteMoves(StepStatistics stats, Schedule schedule, int step, System.CommandLine.ParseResult args, TextWriter note)
    {
        if (stats.Moves.Count == 0) return;
        foreach (var move in stats.Moves) note.WriteLine($"rebalanced {move}");
        if (Commands.MpiRun.OutputFile(args.GetValue(Options.TrainOptions.Svg), perRank: true) is not { } svg) return;
        string path = Path.Combine(Path.GetDirectoryName(svg) ?? "", $"{Path.GetFileNameWithoutExtension(svg)}.step-{step}{Path.GetExtension(svg)}");
        string title = $"measured: {schedule.Name}, {Shape(schedule.RankCount, schedule.StageCount)}, step {step}, then layers moved";
        File.WriteAllText(path, TimelineSvg.Render(stats.Timeline, schedule.RankCount, title, stats.Moves));
        note.WriteLine($"wrote {path}: timeline of step {step} with its moves");
    }

    /// <summary>"4 ranks" or "4 ranks x 2 stages", for titles and headers.</summary>
    public static string Shape(int ranks, int pieces) =>
        pieces == ranks ? $"{ranks} rank{(ranks == 1 ? "" : "s")}" : $"{ranks} rank{(ranks == 1 ? "" : "s")} x {pieces / ranks} stages";
}

using System.Globalization;
using System.Text;
using PipeSharp.Schedules;

namespace PipeSharp.Tracing;

/// <summary>
/// Draws a timeline as plain text for a terminal: one line per rank, time cut into equal columns.
/// </summary>
/// <example>
/// <code>
/// rank 0 |FF....BB|
/// rank 1 |..FFIIWW|
/// makespan 4 s, 1 column = 500 ms
/// </code>
/// </example>
public static class TimelineText
{
    /// <summary>
    /// Renders <paramref name="timeline"/> with one line per rank and <paramref name="width"/> columns spanning
    /// time 0 to the makespan (the end of the last action), then a line with the makespan.
    /// </summary>
    /// <remarks>
    /// Each column shows what occupies most of it: the letter of the action that covers the largest part of the column
    /// (<c>F</c> forward, <c>B</c> backward, <c>I</c> input gradient, <c>W</c> weight gradient), or <c>.</c> when the
    /// rank is idle for longer than any one action runs there. When a rank holds several stages, the actions of its
    /// second chunk (stages <paramref name="rankCount"/> to 2 × <paramref name="rankCount"/> - 1) are written in
    /// lower case, the third chunk in upper case again, and so on.
    /// </remarks>
    /// <param name="timeline">The actions with their start and end, in seconds from the start of the step.</param>
    /// <param name="rankCount">How many ranks the pipeline has; every rank gets a line, idle ones too.</param>
    /// <param name="width">How many columns the time axis has.</param>
    /// <param name="moves">
    /// Layers that moved between ranks after this step (<see cref="StepStatistics.Moves"/>): each is marked at the end of
    /// the lines of its two ranks (<c>&gt;&gt; layers 4,5 to rank 1</c>, <c>&lt;&lt; layers 4,5 from rank 0</c>) and
    /// written out on a line of its own after the makespan.
    /// </param>
    /// <returns>The lines, each ending with a line feed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="rankCount"/> or <paramref name="width"/> is below 1.</exception>
    /// <exception cref="ArgumentException">An action runs on a rank outside 0 to <paramref name="rankCount"/> - 1.</exception>
    public static string Render(IReadOnlyList<ActionTiming> timeline, int rankCount, int width = 100, IReadOnlyList<LayerMove>? moves = null)
    {
        TimelineFacts.Check(timeline, rankCount);
        if (width < 1)
            throw new ArgumentOutOfRangeException(nameof(width), width, "The text timeline needs at least one column.");

        double makespan = TimelineFacts.Makespan(timeline);
        double column = makespan / width;
        var labels = Enumerable.Range(0, rankCount).Select(r => $"rank {r}").ToList();
        int labelWidth = labels.Max(l => l.Length);

        var text = new StringBuilder();
        for (int rank = 0; rank < rankCount; rank++)
        {
            var actions = timeline.Where(t => t.Rank == rank && t.End > t.Start).ToList();
            text.Append(labels[rank].PadRight(labelWidth)).Append(" |");
            for (int c = 0; c < width; c++)
                text.Append(makespan > 0 ? Cell(actions, c * column, (c + 1) * column, rankCount) : '.');
            text.Append('|');
            foreach (var m in moves ?? [])
            {
                string layers = $"layer{(m.Layers.Count > 1 ? "s" : "")} {string.Join(",", m.Layers)}";
                if (m.FromRank == rank) text.Append(CultureInfo.InvariantCulture, $" >> {layers} to rank {m.ToRank}");
                if (m.ToRank == rank) text.Append(CultureInfo.InvariantCulture, $" << {layers} from rank {m.FromRank}");
            }
            text.Append('\n');
        }
        text.Append(CultureInfo.InvariantCulture, $"makespan {Duration(makespan)}, 1 column = {Duration(column)}\n");
        foreach (var m in moves ?? []) text.Append(CultureInfo.InvariantCulture, $"move {m}\n");
        return text.ToString();
    }

    /// <summary>The character of the column from <paramref name="from"/> to <paramref name="to"/> seconds.</summary>
    private static char Cell(List<ActionTiming> actions, double from, double to, int rankCount)
    {
        ActionTiming? best = null;
        double bestOverlap = 0, busy = 0;
        foreach (var a in actions)
        {
            double overlap = Math.Min(a.End, to) - Math.Max(a.Start, from);
            if (overlap <= 0) continue;
            busy += overlap;
            if (overlap > bestOverlap)
            {
                best = a;
                bestOverlap = overlap;
            }
        }
        double idle = (to - from) - busy;
        if (best is not { } b || idle > bestOverlap) return '.';
        char letter = PipelineAction.Letter(b.Action.Kind);
        return TimelineFacts.Chunk(b.Action.Stage, rankCount) % 2 == 1 ? char.ToLowerInvariant(letter) : letter;
    }

    /// <summary>A duration in the unit that keeps it readable: seconds, milliseconds or microseconds (ASCII only).</summary>
    private static string Duration(double seconds)
    {
        var inv = CultureInfo.InvariantCulture;
        if (seconds == 0) return "0 ms";
        if (seconds >= 1) return seconds.ToString("0.###", inv) + " s";
        if (seconds >= 1e-3) return (seconds * 1e3).ToString("0.###", inv) + " ms";
        return (seconds * 1e6).ToString("0.###", inv) + " us";
    }
}

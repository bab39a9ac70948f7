using System.Globalization;
using System.Text;
using PipeSharp.Schedules;

namespace PipeSharp.Tracing;

/// <summary>
/// Draws a timeline as a standalone SVG picture in the style of the pipeline-parallelism papers (GPipe, 1F1B,
/// Zero Bubble): one row per rank, time running to the right, one coloured box per action.
/// </summary>
/// <remarks>
/// Boxes are coloured by kind: forward blue, backward green, input gradient teal, weight gradient orange. When the
/// timeline has several chunks (a rank holding stages s, s + ranks, ...), later chunks use darker shades of the same
/// colour. A box is labelled with its micro-batch, prefixed by its stage (<c>s4:5</c>) on ranks that hold several
/// stages, and left blank when it is too narrow for the text. Hovering a box in a browser shows the action and its
/// times. Action boxes carry <c>class="action"</c>; their labels <c>class="label"</c>.
/// </remarks>
public static class TimelineSvg
{
    private const double Left = 72, PlotWidth = 1000, Right = 28;
    private const double RowPitch = 32, LaneHeight = 28, BoxInset = 2;
    private const double LabelFontSize = 11, LabelCharWidth = 6.6, LabelPadding = 6;
    private const string Font = "font-family=\"Helvetica, Arial, sans-serif\"";

    private static readonly ActionKind[] Kinds =
        [ActionKind.Forward, ActionKind.Backward, ActionKind.InputGrad, ActionKind.WeightGrad];

    /// <summary>Renders <paramref name="timeline"/> as an SVG document.</summary>
    /// <param name="timeline">The actions with their start and end, in seconds from the start of the step.</param>
    /// <param name="rankCount">How many ranks the pipeline has; every rank gets a row, idle ones too.</param>
    /// <param name="title">A title written above the rows, or <see langword="null"/> for none.</param>
    /// <param name="moves">
    /// Layers that moved between ranks after this step (<see cref="StepStatistics.Moves"/>): a red marker at the end of
    /// the step from the old rank's lane to the new one's, and a line for each below the legend.
    /// </param>
    /// <returns>The SVG text, about 1100 pixels wide, time 0 to the makespan spanning 1000 of them.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="rankCount"/> is below 1.</exception>
    /// <exception cref="ArgumentException">An action runs on a rank outside 0 to <paramref name="rankCount"/> - 1.</exception>
    public static string Render(IReadOnlyList<ActionTiming> timeline, int rankCount, string? title = null, IReadOnlyList<LayerMove>? moves = null)
    {
        TimelineFacts.Check(timeline, rankCount);

        double makespan = TimelineFacts.Makespan(timeline);
        double axisSeconds = makespan > 0 ? makespan : 1e-3;
        double scale = PlotWidth / axisSeconds;
        int chunks = TimelineFacts.ChunkCount(timeline, rankCount);
        var severalStages = TimelineFacts.RanksWithSeveralStages(timeline);

        double top = string.IsNullOrEmpty(title) ? 16 : 46;
        double rowsBottom = top + rankCount * RowPitch;
        double legendTop = rowsBottom + 50;
        moves ??= [];
        double width = Left + PlotWidth + Right, height = legendTop + 30 + 18 * moves.Count;

        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture,
            $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{N(width)}\" height=\"{N(height)}\" viewBox=\"0 0 {N(width)} {N(height)}\">\n");
        svg.Append(CultureInfo.InvariantCulture,
            $"  <rect class=\"background\" x=\"0\" y=\"0\" width=\"{N(width)}\" height=\"{N(height)}\" fill=\"#ffffff\"/>\n");
        if (!string.IsNullOrEmpty(title))
            svg.Append(CultureInfo.InvariantCulture,
                $"  <text x=\"{N(Left)}\" y=\"28\" {Font} font-size=\"16\" font-weight=\"bold\" fill=\"#222222\">{Escape(title)}</text>\n");

        // One grey lane per rank, with its name on the left.
        for (int rank = 0; rank < rankCount; rank++)
        {
            double y = top + rank * RowPitch;
            svg.Append(CultureInfo.InvariantCulture,
                $"  <rect class=\"lane\" x=\"{N(Left)}\" y=\"{N(y)}\" width=\"{N(PlotWidth)}\" height=\"{N(LaneHeight)}\" fill=\"#f3f3f3\"/>\n");
            svg.Append(CultureInfo.InvariantCulture,
                $"  <text x=\"{N(Left - 10)}\" y=\"{N(y + LaneHeight / 2 + 4)}\" {Font} font-size=\"12\" text-anchor=\"end\" fill=\"#222222\">rank {rank}</text>\n");
        }

        // Time axis: grid lines through the lanes, ticks and labels in milliseconds.
        double step = TickStep(axisSeconds * 1e3);
        int decimals = Math.Max(0, -(int)Math.Floor(Math.Log10(step)));
        svg.Append(CultureInfo.InvariantCulture,
            $"  <line x1=\"{N(Left)}\" y1=\"{N(rowsBottom)}\" x2=\"{N(Left + PlotWidth)}\" y2=\"{N(rowsBottom)}\" stroke=\"#555555\" stroke-width=\"1\"/>\n");
        for (int i = 0; i * step <= axisSeconds * 1e3 * (1 + 1e-9); i++)
        {
            double ms = i * step, x = Left + ms / 1e3 * scale;
            svg.Append(CultureInfo.InvariantCulture,
                $"  <line x1=\"{N(x)}\" y1=\"{N(top)}\" x2=\"{N(x)}\" y2=\"{N(rowsBottom)}\" stroke=\"#dddddd\" stroke-width=\"1\"/>\n");
            svg.Append(CultureInfo.InvariantCulture,
                $"  <line x1=\"{N(x)}\" y1=\"{N(rowsBottom)}\" x2=\"{N(x)}\" y2=\"{N(rowsBottom + 5)}\" stroke=\"#555555\" stroke-width=\"1\"/>\n");
            svg.Append(CultureInfo.InvariantCulture,
                $"  <text x=\"{N(x)}\" y=\"{N(rowsBottom + 18)}\" {Font} font-size=\"11\" text-anchor=\"middle\" fill=\"#444444\">{ms.ToString("F" + decimals, CultureInfo.InvariantCulture)}</text>\n");
        }
        svg.Append(CultureInfo.InvariantCulture,
            $"  <text x=\"{N(Left + PlotWidth / 2)}\" y=\"{N(rowsBottom + 36)}\" {Font} font-size=\"12\" text-anchor=\"middle\" fill=\"#222222\">time (ms), makespan {Ms(makespan)} ms</text>\n");

        // The actions.
        foreach (var t in timeline.OrderBy(t => t.Rank).ThenBy(t => t.Start))
        {
            var a = t.Action;
            double x = Left + Math.Max(0, t.Start) * scale;
            double w = Math.Max(0.5, (t.End - Math.Max(0, t.Start)) * scale);
            double y = top + t.Rank * RowPitch + BoxInset, h = LaneHeight - 2 * BoxInset;
            string fill = Fill(a.Kind, TimelineFacts.Chunk(a.Stage, rankCount), chunks);
            svg.Append(CultureInfo.InvariantCulture,
                $"  <rect class=\"action\" x=\"{N(x)}\" y=\"{N(y)}\" width=\"{N(w)}\" height=\"{N(h)}\" fill=\"{fill}\" stroke=\"#ffffff\" stroke-width=\"0.75\">");
            svg.Append(CultureInfo.InvariantCulture,
                $"<title>{Escape($"{a} on rank {t.Rank}: {Ms(t.Start)} to {Ms(t.End)} ms")}</title></rect>\n");

            string? label = Label(a, severalStages.Contains(t.Rank), w);
            if (label is not null)
                svg.Append(CultureInfo.InvariantCulture,
                    $"  <text class=\"label\" x=\"{N(x + w / 2)}\" y=\"{N(y + h / 2 + 4)}\" {Font} font-size=\"{N(LabelFontSize)}\" text-anchor=\"middle\" fill=\"{TextColour(fill)}\">{Escape(label)}</text>\n");
        }

        // Legend: one entry per kind that occurs, with one swatch per chunk.
        double lx = Left;
        foreach (var kind in Kinds.Where(k => timeline.Any(t => t.Action.Kind == k)))
        {
            for (int c = 0; c < chunks; c++, lx += 14)
                svg.Append(CultureInfo.InvariantCulture,
                    $"  <rect class=\"legend\" x=\"{N(lx)}\" y=\"{N(legendTop)}\" width=\"14\" height=\"14\" fill=\"{Fill(kind, c, chunks)}\" stroke=\"#ffffff\" stroke-width=\"0.75\"/>\n");
            string name = $"{PipelineAction.Letter(kind)} {KindName(kind)}";
            svg.Append(CultureInfo.InvariantCulture,
                $"  <text x=\"{N(lx + 6)}\" y=\"{N(legendTop + 11)}\" {Font} font-size=\"12\" fill=\"#222222\">{Escape(name)}</text>\n");
            lx += 6 + name.Length * 7 + 24;
        }
        if (chunks > 1)
            svg.Append(CultureInfo.InvariantCulture,
                $"  <text x=\"{N(lx)}\" y=\"{N(legendTop + 11)}\" {Font} font-size=\"12\" fill=\"#555555\">darker shade = later chunk (chunk = stage ÷ {rankCount})</text>\n");

        // Moves after the step: a marker at its end from the old rank's lane to the new one's, and a line each.
        for (int k = 0; k < moves.Count; k++)
        {
            var m = moves[k];
            double x = Left + PlotWidth + 8 + 6 * k;
            double y1 = top + Math.Clamp(m.FromRank, 0, rankCount - 1) * RowPitch + LaneHeight / 2;
            double y2 = top + Math.Clamp(m.ToRank, 0, rankCount - 1) * RowPitch + LaneHeight / 2;
            svg.Append(CultureInfo.InvariantCulture,
                $"  <line class=\"move\" x1=\"{N(x)}\" y1=\"{N(y1)}\" x2=\"{N(x)}\" y2=\"{N(y2)}\" stroke=\"#c62828\" stroke-width=\"2\"><title>{Escape(m.ToString())}</title></line>\n");
            svg.Append(CultureInfo.InvariantCulture,
                $"  <circle class=\"move\" cx=\"{N(x)}\" cy=\"{N(y2)}\" r=\"3\" fill=\"#c62828\"/>\n");
            svg.Append(CultureInfo.InvariantCulture,
                $"  <text x=\"{N(Left)}\" y=\"{N(legendTop + 40 + 18 * k)}\" {Font} font-size=\"12\" fill=\"#c62828\">{Escape("move " + m)}</text>\n");
        }

        svg.Append("</svg>\n");
        return svg.ToString();
    }

    /// <summary>The text inside a box, or <see langword="null"/> when even the micro-batch number does not fit.</summary>
    private static string? Label(PipelineAction a, bool withStage, double boxWidth)
    {
        string micro = a.MicroBatch.ToString(CultureInfo.InvariantCulture);
        string full = withStage ? $"s{a.Stage}:{micro}" : micro;
        if (Fits(full, boxWidth)) return full;
        return Fits(micro, boxWidth) ? micro : null;
    }

    private static bool Fits(string text, double boxWidth) => text.Length * LabelCharWidth + LabelPadding <= boxWidth;

    private static string KindName(ActionKind kind) => kind switch
    {
        ActionKind.Forward => "forward",
        ActionKind.Backward => "backward",
        ActionKind.InputGrad => "input grad",
        ActionKind.WeightGrad => "weight grad",
        _ => kind.ToString(),
    };

    /// <summary>The colour of a kind: its base colour for chunk 0, darker for later chunks.</summary>
    private static string Fill(ActionKind kind, int chunk, int chunks)
    {
        var (r, g, b) = kind switch
        {
            ActionKind.Forward => (0x4E, 0x79, 0xA7),
            ActionKind.Backward => (0x59, 0xA1, 0x4F),
            ActionKind.InputGrad => (0x76, 0xB7, 0xB2),
            _ => (0xF2, 0x8E, 0x2B),
        };
        double dark = chunks > 1 ? 0.45 * chunk / (chunks - 1) : 0;
        int Shade(int v) => (int)Math.Round(v * (1 - dark));
        return $"#{Shade(r):x2}{Shade(g):x2}{Shade(b):x2}";
    }

    /// <summary>Dark text on light fills, white text on dark ones.</summary>
    private static string TextColour(string fill)
    {
        int r = Convert.ToInt32(fill.Substring(1, 2), 16), g = Convert.ToInt32(fill.Substring(3, 2), 16), b = Convert.ToInt32(fill.Substring(5, 2), 16);
        return (0.299 * r + 0.587 * g + 0.114 * b) / 255 > 0.6 ? "#1a1a1a" : "#ffffff";
    }

    /// <summary>A round tick spacing (1, 2 or 5 times a power of ten) giving about eight ticks over <paramref name="span"/>.</summary>
    private static double TickStep(double span)
    {
        double raw = span / 8, power = Math.Pow(10, Math.Floor(Math.Log10(raw))), m = raw / power;
        return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * power;
    }

    private static string N(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);

    private static string Ms(double seconds) => (seconds * 1e3).ToString("0.###", CultureInfo.InvariantCulture);

    private static string Escape(string text) => text
        .Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&quot;").Replace("'", "&apos;");
}

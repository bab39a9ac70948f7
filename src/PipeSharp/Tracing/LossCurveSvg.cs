using System.Globalization;
using System.Security;
using System.Text;

namespace PipeSharp.Tracing;

/// <summary>Draws loss curves (training and validation loss against the step) as a standalone SVG picture.</summary>
public static class LossCurveSvg
{
    /// <summary>One named curve: (step, loss) points in step order.</summary>
    public sealed record Series(string Name, IReadOnlyList<(int Step, double Loss)> Points, string Colour);

    /// <summary>Renders the curves on shared axes, with a legend and an optional horizontal target line.</summary>
    public static string Render(IReadOnlyList<Series> series, string title, double? target = null, string? targetLabel = null)
    {
        var points = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.Loss)).ToList();
        if (points.Count == 0) throw new ArgumentException("no finite points to draw.", nameof(series));
        const int width = 800, height = 450, left = 60, right = 20, top = 40, bottom = 50;
        double maxStep = Math.Max(1, points.Max(p => p.Step));
        double minLoss = Math.Min(points.Min(p => p.Loss), target ?? double.MaxValue);
        double maxLoss = points.Max(p => p.Loss);
        double pad = (maxLoss - minLoss) * 0.05 + 1e-9;
        (minLoss, maxLoss) = (minLoss - pad, maxLoss + pad);
        string X(double step) => F(left + step / maxStep * (width - left - right));
        string Y(double loss) => F(top + (maxLoss - loss) / (maxLoss - minLoss) * (height - top - bottom));

        var svg = new StringBuilder();
        svg.Append($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">");
        svg.Append($"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>");
        svg.Append($"<text x=\"{width / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{SecurityElement.Escape(title)}</text>");
        for (int k = 0; k <= 5; k++)
        {
            double loss = minLoss + (maxLoss - minLoss) * k / 5;
            svg.Append($"<line x1=\"{left}\" x2=\"{width - right}\" y1=\"{Y(loss)}\" y2=\"{Y(loss)}\" stroke=\"#e5e5e5\"/>");
            svg.Append($"<text x=\"{left - 6}\" y=\"{Y(loss)}\" text-anchor=\"end\" dominant-baseline=\"middle\">{loss.ToString("0.00", CultureInfo.InvariantCulture)}</text>");
            double step = maxStep * k / 5;
            svg.Append($"<text x=\"{X(step)}\" y=\"{height - bottom + 18}\" text-anchor=\"middle\">{step.ToString("0", CultureInfo.InvariantCulture)}</text>");
        }
        svg.Append($"<line x1=\"{left}\" x2=\"{width - right}\" y1=\"{height - bottom}\" y2=\"{height - bottom}\" stroke=\"black\"/>");
        svg.Append($"<line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{height - bottom}\" stroke=\"black\"/>");
        svg.Append($"<text x=\"{(left + width - right) / 2}\" y=\"{height - 10}\" text-anchor=\"middle\">step</text>");
        svg.Append($"<text x=\"16\" y=\"{(top + height - bottom) / 2}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {(top + height - bottom) / 2})\">loss (nats per token)</text>");
        if (target is { } t)
        {
            svg.Append($"<line x1=\"{left}\" x2=\"{width - right}\" y1=\"{Y(t)}\" y2=\"{Y(t)}\" stroke=\"#d62728\" stroke-dasharray=\"6 4\"/>");
            svg.Append($"<text x=\"{width - right - 4}\" y=\"{F(double.Parse(Y(t), CultureInfo.InvariantCulture) - 5)}\" text-anchor=\"end\" fill=\"#d62728\">{SecurityElement.Escape(targetLabel ?? $"target {t:0.00}")}</text>");
        }
        int legendY = top + 10;
        int legendX = width - right - 40 - 7 * series.Max(s => s.Name.Length); // about 7 px per character at 12 px
        foreach (var s in series)
        {
            var path = string.Join(" ", s.Points.Where(p => double.IsFinite(p.Loss)).Select((p, i) => $"{(i == 0 ? "M" : "L")}{X(p.Step)},{Y(p.Loss)}"));
            svg.Append($"<path d=\"{path}\" fill=\"none\" stroke=\"{s.Colour}\" stroke-width=\"1.6\"/>");
            svg.Append($"<line x1=\"{legendX}\" x2=\"{legendX + 25}\" y1=\"{legendY}\" y2=\"{legendY}\" stroke=\"{s.Colour}\" stroke-width=\"3\"/>");
            svg.Append($"<text x=\"{legendX + 30}\" y=\"{legendY}\" dominant-baseline=\"middle\">{SecurityElement.Escape(s.Name)}</text>");
            legendY += 18;
        }
        svg.Append("</svg>");
        return svg.ToString();
    }

    private static string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);
}

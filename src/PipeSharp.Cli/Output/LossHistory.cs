using System.Globalization;
using PipeSharp.Tracing;
using PipeSharp.Training;

namespace PipeSharp.Cli.Output;

/// <summary>
/// The losses of a language-model run: written as they come to the <c>--log</c> CSV file
/// (<c>step,loss,lr,tokens_per_s,val_loss</c>), drawn at the end with <see cref="LossCurveSvg"/>. A resumed run keeps
/// the log's rows up to the step it resumed from and appends to them, so the log and the curve cover the whole run.
/// </summary>
internal sealed class LossHistory : IDisposable
{
    /// <summary>Steps in the running mean of the training loss drawn in the curve.</summary>
    public const int SmoothingWindow = 20;

    private const string CsvHeader = "step,loss,lr,tokens_per_s,val_loss";
    private readonly List<(int Step, double Loss, double? Validation)> _points = [];
    private readonly StreamWriter? _csv;

    /// <param name="csvPath">The CSV file, or null for none.</param>
    /// <param name="resumedStep">The step the run resumed from (0 for a fresh run, which starts a new file).</param>
    public LossHistory(string? csvPath, int resumedStep)
    {
        if (csvPath is null) return;
        var kept = resumedStep > 0 && File.Exists(csvPath)
            ? File.ReadLines(csvPath).Where(line => Parse(line) is { } row && row.Step <= resumedStep).ToList()
            : [];
        foreach (var line in kept) _points.Add(Parse(line)!.Value);
        _csv = new StreamWriter(csvPath, append: false);
        _csv.WriteLine(CsvHeader);
        foreach (var line in kept) _csv.WriteLine(line);
        _csv.Flush();
    }

    /// <summary>Steps recorded (including those kept from the log of a resumed run).</summary>
    public int Count => _points.Count;

    /// <summary>
    /// The mean training loss of the last <see cref="SmoothingWindow"/> steps (or fewer, if fewer are recorded). Steps
    /// skipped for a non-finite loss (--on-nonfinite skip) are left out, here and in the curve.
    /// </summary>
    public (double Mean, int Steps)? Recent =>
        Finite.Count == 0 ? null : (Finite.TakeLast(SmoothingWindow).Average(p => p.Loss), Math.Min(SmoothingWindow, Finite.Count));

    private List<(int Step, double Loss, double? Validation)> Finite => _points.Where(p => double.IsFinite(p.Loss)).ToList();

    public void Add(TrainingStepReport r)
    {
        _points.Add((r.Step, r.Loss, r.ValidationLoss));
        if (_csv is null) return;
        _csv.WriteLine(string.Join(",",
            r.Step.ToString(CultureInfo.InvariantCulture), r.Loss.ToString("R", CultureInfo.InvariantCulture),
            r.LearningRate.ToString("G6", CultureInfo.InvariantCulture), r.TokensPerSecond.ToString("F1", CultureInfo.InvariantCulture),
            r.ValidationLoss?.ToString("R", CultureInfo.InvariantCulture) ?? ""));
        _csv.Flush();
    }

    /// <summary>Draws the training loss (each step, and its running mean) and the validation points to <paramref name="path"/>.</summary>
    public void WriteCurve(string path, string title)
    {
        var raw = Finite.Select(p => (p.Step, p.Loss)).ToList();
        var smooth = raw.Select((p, i) => (p.Step, raw.Skip(Math.Max(0, i - SmoothingWindow + 1)).Take(Math.Min(i + 1, SmoothingWindow)).Average(q => q.Loss))).ToList();
        var validation = _points.Where(p => p.Validation is not null).Select(p => (p.Step, p.Validation!.Value)).ToList();
        var series = new List<LossCurveSvg.Series>
        {
            // Short names: the legend has room for about 24 characters.
            new("training, each step", raw, "#c6dbef"),
            new($"training, {SmoothingWindow}-step mean", smooth, "#1f77b4"),
        };
        if (validation.Count > 0) series.Add(new("validation", validation, "#ff7f0e"));
        File.WriteAllText(path, LossCurveSvg.Render(series, title));
    }

    public void Dispose() => _csv?.Dispose();

    // A data row of the log: "12,2.345,0.001,5120.3," (the header and anything else give null).
    private static (int Step, double Loss, double? Validation)? Parse(string line)
    {
        var f = line.Split(',');
        if (f.Length != 5
            || !int.TryParse(f[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out int step)
            || !double.TryParse(f[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double loss))
            return null;
        double? validation = double.TryParse(f[4], NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v : null;
        return (step, loss, validation);
    }
}

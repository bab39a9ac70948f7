using System.Diagnostics;

namespace PipeSharp.Cli.Output;

/// <summary>
/// A single status line that redraws itself in place (with a carriage return) on a terminal:
/// <c>[#####.....] step 120/500  loss 1.234  3,456 samples/s  ETA 00:12</c>. Other lines can be written
/// above it with <see cref="WriteLine"/>. A run resumed after <c>startStep</c> steps counts its ETA from there.
/// </summary>
internal sealed class ProgressLine(TextWriter output, int totalSteps, string rateUnit = "samples/s", int startStep = 0)
{
    private const int BarWidth = 20;
    private static readonly TimeSpan RedrawInterval = TimeSpan.FromMilliseconds(100);

    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private TimeSpan? _lastDraw;
    private string _current = "";
    private int _drawnLength;

    /// <summary>Updates the line after <paramref name="step"/> steps; redraws at most ten times a second.</summary>
    public void Update(int step, float loss, double rate)
    {
        var elapsed = _clock.Elapsed;
        int filled = (int)((long)BarWidth * step / totalSteps);
        var eta = TimeSpan.FromSeconds(elapsed.TotalSeconds / Math.Max(1, step - startStep) * (totalSteps - step));
        _current = $"[{new string('#', filled)}{new string('.', BarWidth - filled)}] step {step}/{totalSteps}  " +
                   $"loss {loss:F3}  {rate:N0} {rateUnit}  ETA {Format(eta)}";
        if (step == totalSteps || _lastDraw is null || elapsed - _lastDraw >= RedrawInterval)
        {
            Draw(_current);
            _lastDraw = elapsed;
        }
    }

    /// <summary>Writes a full line above the progress line.</summary>
    public void WriteLine(string line)
    {
        Clear();
        output.WriteLine(line);
        Draw(_current);
    }

    /// <summary>Removes the progress line, leaving the cursor at the start of an empty line.</summary>
    public void Clear()
    {
        if (_drawnLength == 0) return;
        output.Write('\r' + new string(' ', _drawnLength) + '\r');
        output.Flush();
        _drawnLength = 0;
    }

    private void Draw(string text)
    {
        if (text.Length == 0) return;
        // A line wider than the terminal wraps, and '\r' would then only return to the wrapped part.
        int width = TerminalWidth();
        if (text.Length >= width) text = text[..(width - 1)];
        output.Write('\r' + text + new string(' ', Math.Max(0, _drawnLength - text.Length)));
        output.Flush();
        _drawnLength = text.Length;
    }

    private static int TerminalWidth()
    {
        try { return Console.WindowWidth > 10 ? Console.WindowWidth : 80; }
        catch (IOException) { return 80; }
        catch (PlatformNotSupportedException) { return 80; }
    }

    private static string Format(TimeSpan t) =>
        t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t.Minutes:00}:{t.Seconds:00}" : $"{t.Minutes:00}:{t.Seconds:00}";
}

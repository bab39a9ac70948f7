using System.Text.Json;
using System.Text.Json.Serialization;
using PipeSharp.Training;

namespace PipeSharp.Cli.Output;

/// <summary>Where <c>train --model gpt</c> sends what it has to say.</summary>
internal interface ILanguageModelOutput
{
    /// <summary>Before the first step: the task, the model, the split and the optimizer.</summary>
    void Start(IReadOnlyList<string> header);

    void Step(TrainingStepReport report);

    /// <summary>A remark during or after the run: resumed, a checkpoint saved, a file written.</summary>
    void Note(string line);

    /// <summary>After the run (or after Ctrl+C): the summary.</summary>
    void Finish(IReadOnlyList<string> summary);
}

/// <summary>
/// Human-readable output: the header, a line per step (or every <c>logEvery</c> steps, and always on steps that
/// measured the validation loss), the summary. With a <see cref="ProgressLine"/> (on a terminal) a status line is
/// redrawn after every step.
/// </summary>
internal sealed class LanguageModelTextOutput(TextWriter output, int logEvery, int totalSteps, long tokensPerStep, ProgressLine? progress)
    : ILanguageModelOutput
{
    private readonly int _stepWidth = totalSteps.ToString().Length;
    private bool _first = true;
    private double _seconds, _firstRate;
    private long _tokens;

    public void Start(IReadOnlyList<string> header)
    {
        foreach (var line in header) output.WriteLine(line);
        output.WriteLine();
    }

    public void Step(TrainingStepReport r)
    {
        // The run's first step is left out of the mean throughput: it includes warm-up (allocation, thread start).
        if (_first) _firstRate = r.TokensPerSecond;
        else
        {
            _seconds += tokensPerStep / r.TokensPerSecond;
            _tokens += tokensPerStep;
        }
        progress?.Update(r.Step, r.Loss, _seconds > 0 ? _tokens / _seconds : _firstRate);
        if (_first || r.Step % logEvery == 0 || r.Step == totalSteps || r.ValidationLoss is not null || r.Skipped) Note(Line(r));
        _first = false;
    }

    public void Note(string line)
    {
        if (progress is null) output.WriteLine(line);
        else progress.WriteLine(line);
    }

    public void Finish(IReadOnlyList<string> summary)
    {
        progress?.Clear();
        output.WriteLine();
        foreach (var line in summary) output.WriteLine(line);
    }

    private string Line(TrainingStepReport r)
    {
        string busy = string.Join(" ", r.StageBusy.Select(b => $"{b * 100,3:F0}%"));
        return $"step {r.Step.ToString().PadLeft(_stepWidth)}  loss {r.Loss,7:F4}  lr {r.LearningRate:0.00e+00}  " +
               $"{r.TokensPerSecond,9:N0} tokens/s  busy {busy}" +
               (r.GradientNorm is { } g ? $"  grad norm {g,6:F3}" : "") +
               (r.ValidationLoss is { } v ? $"  val loss {v:F4}" : "") +
               (r.Skipped ? "  skipped (non-finite)" : "");
    }
}

/// <summary>
/// One JSON object per step on stdout and nothing else there:
/// <c>{"step":1,"loss":4.17,"lr":1e-05,"tokens_per_s":5120.3,"stage_busy":[0.81,0.77],"grad_norm":1.9,"val_loss":null}</c>.
/// Notes and the summary go to <paramref name="notes"/> (stderr).
/// </summary>
internal sealed class LanguageModelJsonOutput(TextWriter output, TextWriter notes) : ILanguageModelOutput
{
    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        // A diverged run still gives valid lines ("NaN" as a string) instead of an exception.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private sealed record Line(int Step, float Loss, double Lr, double TokensPerS, IReadOnlyList<double> StageBusy,
        double? GradNorm, double? ValLoss, [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)] bool Skipped);

    public void Start(IReadOnlyList<string> header) { }

    public void Step(TrainingStepReport r)
    {
        output.WriteLine(JsonSerializer.Serialize(new Line(r.Step, r.Loss, r.LearningRate, Math.Round(r.TokensPerSecond, 1),
            r.StageBusy.Select(b => Math.Round(b, 4)).ToArray(), r.GradientNorm, r.ValidationLoss, r.Skipped), Json));
        output.Flush();
    }

    public void Note(string line) => notes.WriteLine(line);

    public void Finish(IReadOnlyList<string> summary)
    {
        output.Flush();
        foreach (var line in summary) notes.WriteLine(line);
    }
}

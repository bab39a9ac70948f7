using System.Text.Json;
using System.Text.Json.Serialization;

namespace PipeSharp.Cli.Output;

/// <summary>
/// One JSON object per line per step and nothing else, for scripts:
/// <c>{"step":1,"loss":2.31,"samples_per_s":1234.5,"stage_busy":[0.81,0.77]}</c>.
/// </summary>
internal sealed class JsonLinesOutput(TextWriter output) : ITrainOutput
{
    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        // A diverged run still gives valid lines ("NaN" as a string) instead of an exception.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public void Start(TrainSetup setup) { }

    public void Step(StepReport report)
    {
        var rounded = report with
        {
            SamplesPerS = Math.Round(report.SamplesPerS, 1),
            StageBusy = report.StageBusy.Select(b => Math.Round(b, 4)).ToArray(),
        };
        output.WriteLine(JsonSerializer.Serialize(rounded, Json));
    }

    public void Finish(bool interrupted) => output.Flush();
}

namespace PipeSharp.Cli.Output;

/// <summary>What <c>train</c> reports after each step.</summary>
/// <param name="Step">The step number, from 1.</param>
/// <param name="Loss">The loss of the step's batch.</param>
/// <param name="SamplesPerS">Batch size divided by the step's wall-clock time.</param>
/// <param name="StageBusy">The share of the step each rank (over all its stages) was computing, between 0 and 1 (JSON: <c>stage_busy</c>, its name before ranks and stages were told apart).</param>
/// <param name="Skipped">The step was skipped (non-finite loss or gradient norm, --on-nonfinite skip); in JSON only when true.</param>
internal sealed record StepReport(int Step, float Loss, double SamplesPerS, IReadOnlyList<double> StageBusy,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)] bool Skipped = false);

/// <summary>Where <c>train</c> sends what it has to say.</summary>
internal interface ITrainOutput
{
    /// <summary>Before the first step: the model, the split and the schedule.</summary>
    void Start(TrainSetup setup);

    void Step(StepReport report);

    /// <summary>After the last step (or after Ctrl+C, with the steps done so far).</summary>
    void Finish(bool interrupted);
}

/// <summary>One stage of the split and the rank that runs it, for printing.</summary>
internal sealed record StageInfo(int Index, int Rank, int FirstLayer, int LayerCount, string Device, long Parameters);

/// <summary>Everything the header shows.</summary>
internal sealed record TrainSetup(
    string Model, IReadOnlyList<StageInfo> Stages, string Schedule, int MicroBatches, int BatchSize,
    string Optimizer, int? ThreadsPerRank, int Steps, long Seed);

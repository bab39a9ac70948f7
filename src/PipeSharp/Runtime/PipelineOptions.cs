namespace PipeSharp.Runtime;

/// <summary>How a <see cref="Pipeline"/> splits, places and schedules a model.</summary>
public sealed record PipelineOptions
{
    /// <summary>
    /// Number of stages. If <see cref="Balance"/> is null, the layers are split into this many stages balanced by
    /// parameter count. Default: the length of <see cref="Balance"/>, or 1.
    /// </summary>
    public int? Stages { get; init; }

    /// <summary>Layers per stage, in order (e.g. 2,2,2,2,2). Must add up to the model's layer count.</summary>
    public IReadOnlyList<int>? Balance { get; init; }

    /// <summary>
    /// The device of each stage (<c>cpu</c>, <c>cuda</c>, <c>cuda:N</c>): one name for all stages or one per stage.
    /// Default: every stage on the CPU.
    /// </summary>
    public IReadOnlyList<string>? Devices { get; init; }

    /// <summary>Number of micro-batches each batch is split into along dimension 0. Default 1.</summary>
    public int MicroBatches { get; init; } = 1;

    /// <summary>The schedule's name, one of <see cref="Schedules.ScheduleGenerators.Names"/>. Default <c>1f1b</c>.</summary>
    public string Schedule { get; init; } = "1f1b";

    /// <summary>
    /// Intra-op threads of each stage's worker. Default: the processor count divided by the number of
    /// stages, at least 1.
    /// </summary>
    public int? ThreadsPerStage { get; init; }
}

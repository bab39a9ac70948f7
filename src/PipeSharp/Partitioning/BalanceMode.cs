namespace PipeSharp.Partitioning;

/// <summary>
/// How a pipeline splits its model into stages when no explicit balance (layers per stage) is given
/// (<c>PipelineOptions.BalanceMode</c>, CLI <c>train --balance auto|params|uniform|time</c>).
/// </summary>
public enum BalanceMode
{
    /// <summary>By parameter count: the largest stage's parameters as few as possible (the library's default).</summary>
    Parameters,

    /// <summary>Equal layer counts (the last stages take one more when the layers do not divide evenly).</summary>
    Uniform,

    /// <summary>By each layer's measured forward + backward time on one micro-batch: the slowest stage as fast as possible.</summary>
    Time,

    /// <summary>
    /// The exact partitioner (<see cref="StagePartitioner"/>) on the measured times, with the ranks' placement of stages,
    /// their device speeds and memory budgets: the slowest rank as fast as possible within the budgets. Among the splits
    /// predicted within 5% of the fastest (measurement noise), the one best balanced by parameter count
    /// (<see cref="StagePartitioner.SolveWithin"/>), so that runs whose measurements differ by noise split alike. When
    /// no split fits the budgets, the fastest is taken and the pipeline's memory check refuses it, naming what would fit.
    /// </summary>
    Auto,
}

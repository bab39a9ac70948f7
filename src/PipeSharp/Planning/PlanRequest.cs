using PipeSharp.Runtime;

namespace PipeSharp.Planning;

/// <summary>
/// What the planner searches within: the batch, the devices and their memory, and optionally settings to keep fixed.
/// Everything left null is searched: ranks x replicas x micro-batches x schedule x recomputation x intra-op threads.
/// </summary>
public sealed record PlanRequest
{
    /// <summary>Samples per training step (the whole batch, over all replicas).</summary>
    public required int BatchSize { get; init; }

    /// <summary>Tokens in one sample, to report tokens per second (a language model's context length); default 1.</summary>
    public double TokensPerSample { get; init; } = 1;

    /// <summary>
    /// The devices: null or <c>["cpu"]</c>: this machine's processors, shared by ranks x replicas x threads
    /// (at most <see cref="Processors"/>).
    /// </summary>
    public IReadOnlyList<string>? Devices { get; init; }

    /// <summary>Processors the ranks share on the CPU (default: <see cref="Environment.ProcessorCount"/>).</summary>
    public int? Processors { get; init; }

    /// <summary>
    /// Memory each rank may use (bytes): one budget for every rank, or one per rank (then only layouts with that many
    /// ranks are tried). Candidates predicted over it are dropped. Null: no budget.
    /// </summary>
    public IReadOnlyList<long>? MemoryPerDevice { get; init; }

    /// <summary>Fixed number of ranks per replica (null: searched).</summary>
    public int? Ranks { get; init; }

    /// <summary>Fixed number of replicas (null: searched).</summary>
    public int? Replicas { get; init; }

    /// <summary>Fixed micro-batch count (null: searched over the powers of two that divide each replica's share, up to 16).</summary>
    public int? MicroBatches { get; init; }

    /// <summary>Fixed schedule name (null: gpipe, 1f1b, interleaved, zb-h1 and zb-v are tried).</summary>
    public string? Schedule { get; init; }

    /// <summary>Fixed recomputation, none or full (null: both are tried).</summary>
    public Recomputation? Recomputation { get; init; }

    /// <summary>Fixed intra-op threads per rank (null: searched).</summary>
    public int? ThreadsPerRank { get; init; }

    /// <summary>Measured steps of each profile (after a warm-up); default 3.</summary>
    public int ProfileRepeats { get; init; } = 3;

    /// <summary>
    /// Steps of the speed check of a profile read from the cache (after a warm-up step): the profiled step runs again, and
    /// the profile's times are scaled by how much longer or shorter it now takes, so a plan follows the machine's speed
    /// today rather than that of the day it was profiled. Default 2; 0 uses cached profiles as they are (then nothing of
    /// the model runs when every profile is cached).
    /// </summary>
    public int SpeedCheckSteps { get; init; } = 2;
}

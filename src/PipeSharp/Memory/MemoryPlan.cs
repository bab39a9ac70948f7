using PipeSharp.Schedules;

namespace PipeSharp.Memory;

/// <summary>
/// The layout a prediction is for, as the model needs it to try others: the schedule's name (null for a schedule
/// file, which is not varied), the ranks per replica, micro-batches, stages per rank, samples per replica in a step
/// (the most micro-batches there can be; 0 when unknown), the zero-bubble costs, and each layer's parameter bytes.
/// </summary>
internal sealed record MemoryPlan(
    string? ScheduleName,
    int Ranks,
    int MicroBatches,
    int StagesPerRank,
    long SamplesPerReplica,
    ActionCosts? Costs,
    IReadOnlyList<long> LayerParameterBytes);

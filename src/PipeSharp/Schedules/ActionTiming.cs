namespace PipeSharp.Schedules;

/// <summary>When one action ran (or, simulated, would run) on its rank, in seconds from the start of the step.</summary>
public readonly record struct ActionTiming(int Rank, PipelineAction Action, double Start, double End);

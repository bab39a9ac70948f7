using PipeSharp.Schedules;

namespace PipeSharp.Tracing;

/// <summary>
/// One message between two ranks (an activation sent forward or a gradient sent back), with the times it was sent
/// and received, in seconds from the start of the step, like <see cref="ActionTiming"/>.
/// </summary>
/// <param name="FromRank">The rank that sent the message.</param>
/// <param name="ToRank">The rank that received it.</param>
/// <param name="Label">What the message carried, e.g. <c>act 1→2 mb 0</c>; shown by trace viewers.</param>
/// <param name="SendTime">When the sender handed the message over, in seconds from the start of the step.</param>
/// <param name="ReceiveTime">When the receiver got it, in seconds from the start of the step.</param>
public readonly record struct MessageTiming(int FromRank, int ToRank, string Label, double SendTime, double ReceiveTime);

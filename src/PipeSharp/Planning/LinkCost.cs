namespace PipeSharp.Planning;

/// <summary>
/// How long a message takes from one rank to another: <see cref="LatencySeconds"/> plus <see cref="SecondsPerByte"/>
/// for each byte (measured by the profiler; zero between stages on the same rank).
/// </summary>
/// <param name="LatencySeconds">Fixed time per message.</param>
/// <param name="SecondsPerByte">Time per byte of the message.</param>
public sealed record LinkCost(double LatencySeconds, double SecondsPerByte)
{
    /// <summary>No cost: stages on the same rank.</summary>
    public static LinkCost Free { get; } = new(0, 0);

    /// <summary>Seconds for a message of <paramref name="bytes"/> bytes.</summary>
    public double Seconds(long bytes) => bytes <= 0 ? 0 : LatencySeconds + SecondsPerByte * bytes;
}

using System.Globalization;

namespace PipeSharp.Tests.Planning;

/// <summary>
/// A test that compares predicted with measured times: skipped (with the reason) while the machine runs more
/// runnable threads than it has processors (the one-minute load average of /proc/loadavg), when a profile taken a
/// moment earlier cannot tell how much processor time the measured run will get. Set PIPESHARP_TIMING_TESTS=1 to run
/// it anyway.
/// </summary>
public sealed class IdleMachineFactAttribute : FactAttribute
{
    public IdleMachineFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("PIPESHARP_TIMING_TESTS") == "1" || !File.Exists("/proc/loadavg")) return;
        double load = double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture);
        if (load > Environment.ProcessorCount)
            Skip = $"the machine is busy (load average {load:0.0} on {Environment.ProcessorCount} processors): predicted and measured " +
                   "step times are compared on a machine to itself (PIPESHARP_TIMING_TESTS=1 runs it anyway).";
    }
}

using System.Runtime.InteropServices;

namespace PipeSharp.Bench;

/// <summary>
/// Which OS threads of this process used the CPU during a measurement (Linux: /proc/self/task/*/stat). This shows
/// how many threads a variant really computes on (libtorch's OpenMP helpers included), whatever
/// torch.get_num_threads() claims.
/// </summary>
internal static class ThreadCensus
{
    /// <summary>A thread that used at least <see cref="Threshold"/> of the wall time.</summary>
    public readonly record struct Busy(int Tid, string Name, double CpuSeconds);

    public const double Threshold = 0.2;

    private static readonly double TicksPerSecond = OperatingSystem.IsLinux() ? SysConf(2 /* _SC_CLK_TCK */) : 100;

    [DllImport("libc", EntryPoint = "sysconf")]
    private static extern long SysConf(int name);

    public static bool Available => OperatingSystem.IsLinux() && Directory.Exists("/proc/self/task");

    /// <summary>CPU ticks (user + system) of every thread, by thread id.</summary>
    public static Dictionary<int, (string Name, long Ticks)> Take()
    {
        var result = new Dictionary<int, (string, long)>();
        if (!Available) return result;
        foreach (var dir in Directory.EnumerateDirectories("/proc/self/task"))
        {
            try
            {
                string stat = File.ReadAllText(Path.Combine(dir, "stat"));
                int close = stat.LastIndexOf(')');
                string name = stat[(stat.IndexOf('(') + 1)..close];
                var fields = stat[(close + 2)..].Split(' ');
                // After "(comm) ": state is field 3 of the man page, utime 14 and stime 15.
                long ticks = long.Parse(fields[11]) + long.Parse(fields[12]);
                result[int.Parse(Path.GetFileName(dir))] = (name, ticks);
            }
            catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException)
            {
                // The thread ended while we read it.
            }
        }
        return result;
    }

    /// <summary>Threads that used at least <see cref="Threshold"/> x <paramref name="wallSeconds"/> of CPU since <paramref name="before"/>.</summary>
    public static IReadOnlyList<Busy> BusySince(Dictionary<int, (string Name, long Ticks)> before, double wallSeconds)
    {
        var busy = new List<Busy>();
        foreach (var (tid, (name, ticks)) in Take())
        {
            long start = before.TryGetValue(tid, out var b) ? b.Ticks : 0;
            double cpu = (ticks - start) / TicksPerSecond;
            if (cpu >= Threshold * wallSeconds) busy.Add(new Busy(tid, name, cpu));
        }
        return busy.OrderByDescending(b => b.CpuSeconds).ToList();
    }
}

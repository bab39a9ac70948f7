using System.Globalization;

namespace PipeSharp.Bench.Speed;

/// <summary>What the benchmarks of this project share: their command-line arguments, the machine they ran on, medians.</summary>
internal static class BenchFacts
{
    /// <summary>The median (the mean of the middle two for an even count).</summary>
    public static double Median(List<double> xs)
    {
        var s = xs.Order().ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }

    /// <summary>The load averages, to print before and after a run (these machines are shared).</summary>
    public static string Load() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "n/a";

    /// <summary>The processor's model name.</summary>
    public static string Cpu() =>
        File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? "?" : "?";

    /// <summary>The value after <paramref name="name"/>, or null.</summary>
    public static string? Value(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    /// <summary>Every value given after <paramref name="name"/> (the option repeated).</summary>
    public static IEnumerable<string> Values(string[] args, string name)
    {
        for (int i = 0; i + 1 < args.Length; i++)
            if (args[i] == name) yield return args[i + 1];
    }

    /// <summary>The whole number after <paramref name="name"/>, or <paramref name="fallback"/>.</summary>
    public static int Arg(string[] args, string name, int fallback) =>
        Value(args, name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
}

using System.Diagnostics;

namespace PipeSharp.Bench;

/// <summary>All measurements of one variant.</summary>
internal sealed class VariantResult(Variant variant)
{
    public Variant Variant { get; } = variant;
    public List<double> SamplesPerSecond { get; } = new();

    /// <summary>For each measurement, the OS threads of this process that were busy during it.</summary>
    public List<IReadOnlyList<ThreadCensus.Busy>> BusyThreads { get; } = new();

    public double Median => Stats.Median(SamplesPerSecond);
    public double Min => SamplesPerSecond.Min();
    public double Max => SamplesPerSecond.Max();
}

/// <summary>
/// Measures the variants interleaved: every round runs each variant once, the starting variant rotating from round
/// to round, so slow phases of a shared machine hit all variants alike. Each measurement is preceded by one untimed
/// step (caches and thread pools warm for this variant after the previous one ran).
/// </summary>
internal static class Harness
{
    public static IReadOnlyList<VariantResult> Run(IReadOnlyList<Variant> variants, BenchOptions options, TextWriter log)
    {
        var results = variants.Select(v => new VariantResult(v)).ToList();
        foreach (var v in variants)
        {
            v.Prepare();
            if (options.WarmupSteps > 0) v.Run(options.WarmupSteps);
        }

        for (int round = 0; round < options.Rounds; round++)
        {
            log.Write($"round {round + 1}/{options.Rounds}:");
            for (int k = 0; k < results.Count; k++)
            {
                var r = results[(round + k) % results.Count];
                r.Variant.Prepare();
                r.Variant.Run(1);
                var before = ThreadCensus.Take();
                long t0 = Stopwatch.GetTimestamp();
                r.Variant.Run(options.Steps);
                double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                r.BusyThreads.Add(ThreadCensus.BusySince(before, seconds));
                double sps = options.Steps * r.Variant.SamplesPerStep / seconds * r.Variant.Scale;
                r.SamplesPerSecond.Add(sps);
                log.Write($" {r.Variant.Key}={sps:F0}");
            }
            log.WriteLine();
        }
        return results;
    }
}

internal static class Stats
{
    public static double Median(IEnumerable<double> values)
    {
        var v = values.OrderBy(x => x).ToArray();
        if (v.Length == 0) return double.NaN;
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }
}

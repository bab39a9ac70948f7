namespace PipeSharp.Bench.Mpi;

internal static class Stats
{
    /// <summary>The median (the mean of the middle two for an even count); NaN for none.</summary>
    public static double Median(IEnumerable<double> values)
    {
        var s = values.Order().ToList();
        if (s.Count == 0) return double.NaN;
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }

    /// <summary>The <paramref name="q"/> quantile (0 to 1), interpolated between neighbours; NaN for none.</summary>
    public static double Quantile(IEnumerable<double> values, double q)
    {
        var s = values.Order().ToList();
        if (s.Count == 0) return double.NaN;
        double at = q * (s.Count - 1);
        int below = (int)Math.Floor(at);
        return below + 1 < s.Count ? s[below] + (at - below) * (s[below + 1] - s[below]) : s[below];
    }
}

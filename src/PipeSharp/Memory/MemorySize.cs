using System.Globalization;
using System.Text.RegularExpressions;

namespace PipeSharp.Memory;

/// <summary>
/// Byte counts as people write them: <c>2GB</c>, <c>1.5 GiB</c>, <c>512MB</c>, <c>4096</c> (bytes). KB, MB and GB are
/// powers of 1000, KiB, MiB and GiB powers of 1024; the unit's case does not matter.
/// </summary>
public static partial class MemorySize
{
    [GeneratedRegex(@"^\s*(?<n>\d+(\.\d+)?)\s*(?<u>[kmgt]i?b|b)?\s*$", RegexOptions.IgnoreCase)]
    private static partial Regex Pattern();

    /// <summary>Parses one size, e.g. <c>2GB</c> or <c>1.5GiB</c>.</summary>
    /// <param name="text">The size.</param>
    /// <param name="option">The option or parameter the size came from, named in the message of a bad value.</param>
    /// <exception cref="ArgumentException">Not a positive size with a known unit.</exception>
    public static long Parse(string text, string option = "size")
    {
        ArgumentNullException.ThrowIfNull(text);
        var m = Pattern().Match(text);
        if (!m.Success)
            throw new ArgumentException(
                $"{option}: '{text}' is not a memory size; write a number with a unit, e.g. 2GB, 1.5GiB or 512MB " +
                "(KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024; no unit: bytes).", option);
        double number = double.Parse(m.Groups["n"].Value, CultureInfo.InvariantCulture);
        string unit = m.Groups["u"].Success ? m.Groups["u"].Value.ToUpperInvariant() : "B";
        double scale = unit switch
        {
            "B" => 1,
            "KB" => 1e3, "MB" => 1e6, "GB" => 1e9, "TB" => 1e12,
            "KIB" => 1L << 10, "MIB" => 1L << 20, "GIB" => 1L << 30, _ => 1L << 40,
        };
        double bytes = number * scale;
        if (!(bytes >= 1) || bytes > long.MaxValue / 2)
            throw new ArgumentException($"{option}: '{text}' must be at least 1 byte and at most a few exabytes, e.g. 2GB.", option);
        return (long)Math.Round(bytes);
    }

    /// <summary>Parses one size, or a comma-separated list of sizes (one per rank), e.g. <c>2GB,1.5GB</c>.</summary>
    /// <exception cref="ArgumentException">A part is not a size (the message names <paramref name="option"/>).</exception>
    public static IReadOnlyList<long> ParseList(string text, string option = "size")
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split(',');
        if (parts.Any(string.IsNullOrWhiteSpace))
            throw new ArgumentException($"{option}: '{text}' has an empty entry; give one size for all ranks or one per rank, e.g. 2GB or 2GB,1.5GB.", option);
        return parts.Select(p => Parse(p, option)).ToList();
    }

    /// <summary>A byte count for people: <c>1.50 GB</c>, <c>12.3 MB</c>, <c>900 B</c> (powers of 1000).</summary>
    public static string Format(long bytes)
    {
        double b = bytes;
        string sign = b < 0 ? "-" : "";
        b = Math.Abs(b);
        return b switch
        {
            >= 1e9 => $"{sign}{(b / 1e9).ToString("0.00", CultureInfo.InvariantCulture)} GB",
            >= 1e6 => $"{sign}{(b / 1e6).ToString("0.0", CultureInfo.InvariantCulture)} MB",
            >= 1e3 => $"{sign}{(b / 1e3).ToString("0.0", CultureInfo.InvariantCulture)} KB",
            _ => $"{sign}{b:0} B",
        };
    }
}

namespace PipeSharp.Construction;

/// <summary>SplitMix64 (Steele, Lea and Flood): a stable mix of 64-bit values into a seed, the same on every platform.</summary>
internal static class SeedMix
{
    /// <summary>One SplitMix64 output for the state <paramref name="x"/>.</summary>
    public static ulong Mix(ulong x)
    {
        x += 0x9E3779B97F4A7C15UL;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        return x ^ (x >> 31);
    }

    /// <summary>A seed for key <paramref name="key"/> of <paramref name="seed"/>, a non-negative 63-bit number (what <c>torch.manual_seed</c> takes).</summary>
    public static long Of(long seed, long key) => (long)(Mix(Mix((ulong)seed) ^ (ulong)key) >> 1);
}

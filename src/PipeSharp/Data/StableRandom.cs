namespace PipeSharp.Data;

/// <summary>
/// A small SplitMix64 generator whose output is fixed by its seed on every runtime and platform (unlike
/// <see cref="Random"/>, whose algorithm is not promised to stay the same). Batches are drawn from it, seeded by a
/// hash of (seed, split, batch index), so batch k can be regenerated at any time: resuming a run from a checkpoint
/// that stores only the step reproduces the same batches.
/// </summary>
internal struct StableRandom
{
    private const ulong Golden = 0x9E3779B97F4A7C15UL;
    private ulong _state;

    /// <summary>A generator that starts from <paramref name="seed"/>.</summary>
    public StableRandom(ulong seed) => _state = seed;

    /// <summary>A generator seeded from a hash of the given values, in order.</summary>
    public static StableRandom For(long a, long b, long c) => new(Hash(a, b, c));

    /// <summary>A well-mixed 64-bit hash of the given values, in order.</summary>
    public static ulong Hash(long a, long b, long c) => Mix(Mix(Mix((ulong)a) + (ulong)b) + (ulong)c);

    /// <summary>The SplitMix64 finaliser: a bijection of 64-bit values with good avalanche.</summary>
    public static ulong Mix(ulong z)
    {
        z += Golden;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>The next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        _state += Golden;
        ulong z = _state;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>A uniform value in [0, <paramref name="count"/>), without modulo bias.</summary>
    public long NextBelow(long count)
    {
        if (count <= 0) throw new ArgumentOutOfRangeException(nameof(count), count, "The range must hold at least one value.");
        ulong n = (ulong)count;
        ulong limit = ulong.MaxValue - ulong.MaxValue % n; // values at or above this would favour small results
        ulong r;
        do r = NextUInt64(); while (r >= limit);
        return (long)(r % n);
    }
}

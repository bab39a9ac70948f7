namespace PipeSharp.Randomness;

/// <summary>Mixes the parts of a key into one 64-bit generator seed (SplitMix64's finaliser after each part).</summary>
internal static class RandomKey
{
    public static ulong Of(long seed, long step, long layer, long index, long sample)
    {
        ulong h = Mix(unchecked((ulong)seed) ^ 0x9E3779B97F4A7C15UL);
        h = Mix(h ^ unchecked((ulong)step));
        h = Mix(h ^ unchecked((ulong)layer));
        h = Mix(h ^ unchecked((ulong)index));
        return Mix(h ^ unchecked((ulong)sample));
    }

    private static ulong Mix(ulong z)
    {
        unchecked
        {
            z += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }
}

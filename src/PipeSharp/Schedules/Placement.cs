namespace PipeSharp.Schedules;

/// <summary>Standard ways to place stages on ranks.</summary>
internal static class Placement
{
    /// <summary>Stage s on rank s: one stage per rank.</summary>
    public static int[] OnePerRank(int ranks) => Enumerable.Range(0, ranks).ToArray();

    /// <summary>Stage s on rank s mod p: <paramref name="chunks"/> stages per rank, round robin (interleaved 1F1B).</summary>
    public static int[] Interleaved(int ranks, int chunks) => Enumerable.Range(0, ranks * chunks).Select(s => s % ranks).ToArray();

    /// <summary>Two stages per rank in a V: stage s on rank s for s &lt; p, on rank 2p-1-s after (ZB-V).</summary>
    public static int[] VShape(int ranks) => Enumerable.Range(0, 2 * ranks).Select(s => s < ranks ? s : 2 * ranks - 1 - s).ToArray();
}

namespace PipeSharp.Schedules.Generators;

/// <summary>
/// Interleaved 1F1B (Megatron-LM): each of p ranks holds v model chunks (stage c*p + r on rank r), and runs 1F1B
/// over "virtual" micro-batches that cycle through its chunks. The bubble shrinks by a factor v, at the cost of v
/// times as many messages.
/// </summary>
internal static class InterleavedOneForwardOneBackward
{
    /// <summary>Makes the schedule for <paramref name="ranks"/> ranks with <paramref name="chunks"/> chunks each.</summary>
    /// <exception cref="ArgumentException">The micro-batch count is not a multiple of the rank count.</exception>
    public static Schedule Create(int ranks, int microBatches, int chunks)
    {
        Checks.Counts(ranks, microBatches);
        if (chunks < 1)
            throw new ArgumentOutOfRangeException(nameof(chunks), chunks, "The number of chunks per rank must be at least 1.");
        if (microBatches % ranks != 0)
            throw new ArgumentException(
                $"interleaved 1F1B needs the number of micro-batches ({microBatches}) to be a multiple of the number of ranks ({ranks}): " +
                $"use {(microBatches < ranks ? "" : $"{microBatches / ranks * ranks} or ")}{(microBatches / ranks + 1) * ranks} micro-batches.",
                nameof(microBatches));

        int total = microBatches * chunks;
        var lists = new List<IReadOnlyList<PipelineAction>>();
        for (int r = 0; r < ranks; r++)
        {
            // Megatron's warm-up: enough forwards that the first backward of the last chunk can start.
            int warmup = microBatches == ranks
                ? total
                : Math.Min(total, (ranks - r - 1) * 2 + (chunks - 1) * ranks);
            var list = new List<PipelineAction>(2 * total);
            int f = 0, b = 0;
            for (; f < warmup; f++) list.Add(Forward(f, r, ranks, chunks));
            while (f < total)
            {
                list.Add(Forward(f++, r, ranks, chunks));
                list.Add(Backward(b++, r, ranks, chunks));
            }
            while (b < total) list.Add(Backward(b++, r, ranks, chunks));
            lists.Add(list);
        }
        return new Schedule("interleaved", ranks * chunks, microBatches, Placement.Interleaved(ranks, chunks), lists);
    }

    // The k-th forward of a rank: chunks advance every p virtual micro-batches; micro-batches go in groups of p.
    private static PipelineAction Forward(int k, int rank, int ranks, int chunks)
    {
        int chunk = k / ranks % chunks;
        return PipelineAction.F(chunk * ranks + rank, MicroBatch(k, ranks, chunks));
    }

    // The k-th backward of a rank runs the chunks in reverse order.
    private static PipelineAction Backward(int k, int rank, int ranks, int chunks)
    {
        int chunk = chunks - 1 - k / ranks % chunks;
        return PipelineAction.B(chunk * ranks + rank, MicroBatch(k, ranks, chunks));
    }

    private static int MicroBatch(int k, int ranks, int chunks) => k / (ranks * chunks) * ranks + k % ranks;
}

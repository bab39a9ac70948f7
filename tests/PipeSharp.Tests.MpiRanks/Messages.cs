using static TorchSharp.torch;

namespace PipeSharp.Tests.MpiRanks;

/// <summary>The messages of the check: each is worked out from its index and its sender, so the receiver knows what to expect.</summary>
internal static class Messages
{
    public const int MicroBatches = 6;

    // Shapes and dtypes in the order sent; 15 distinct shapes on one channel, more than its 8 slots, and then the
    // first ones again (their slots have been taken over meanwhile). Sizes: empty, one element, around 64 KB, just
    // above the spare-tensor limit (1 MB), and above the receive-buffer pool's threshold (8 MB).
    private static readonly (long[] Shape, ScalarType Dtype, bool Transposed)[] Kinds =
    [
        ([4, 8], ScalarType.Float32, false),
        ([4, 8], ScalarType.Float32, false), // the same shape again: its slot is reused, no new header
        ([3, 8], ScalarType.Float32, false), // a shorter last batch
        ([4, 8], ScalarType.Int64, false), // the first shape in another dtype: another slot
        ([0, 8], ScalarType.Float32, false),
        ([1], ScalarType.Float64, false),
        ([128, 128], ScalarType.Float32, false), // 64 KB
        ([128, 64], ScalarType.Float64, false),
        ([16, 33], ScalarType.Int64, false),
        ([7, 5, 3], ScalarType.Int32, false),
        ([8, 16], ScalarType.BFloat16, false),
        ([9, 2], ScalarType.Float16, false),
        ([31], ScalarType.Byte, false),
        ([512, 513], ScalarType.Float32, false), // just above 1 MB
        ([64, 32], ScalarType.Float32, true), // sent as a transposed (non-contiguous) view
        ([1536, 1536], ScalarType.Float32, false), // 9 MB: the pool
        ([4, 8], ScalarType.Float32, false),
        ([3, 8], ScalarType.Float32, false),
        ([128, 128], ScalarType.Float32, false),
    ];

    /// <summary>(micro-batch, message index) in send order: every micro-batch gets several messages.</summary>
    public static List<(int MicroBatch, int Index)> Plan()
    {
        var plan = new List<(int, int)>();
        for (int round = 0; round < 2; round++)
            for (int k = 0; k < Kinds.Length; k++)
                plan.Add((k % MicroBatches, round * Kinds.Length + k));
        return plan;
    }

    /// <summary>The tensor message <paramref name="index"/> from <paramref name="sender"/>: distinct values per message.</summary>
    public static Tensor Make(int index, int sender)
    {
        var (shape, dtype, transposed) = Kinds[index % Kinds.Length];
        using var scope = NewDisposeScope();
        long count = shape.Aggregate(1L, (a, b) => a * b);
        var values = arange(count, dtype: ScalarType.Float64).remainder(97).add(index * 100 + sender * 10_000 % 251);
        var tensor = transposed
            ? values.reshape(shape[1], shape[0]).to_type(dtype).t() // the shape asked for, but a view
            : values.reshape(shape).to_type(dtype);
        return tensor.MoveToOuterDisposeScope();
    }

    /// <summary>Throws unless <paramref name="received"/> is message <paramref name="index"/> from <paramref name="sender"/>.</summary>
    public static void Check(Tensor received, int index, int sender)
    {
        using var scope = NewDisposeScope();
        var expected = Make(index, sender);
        if (!received.shape.SequenceEqual(expected.shape) || received.dtype != expected.dtype)
            throw new InvalidOperationException(
                $"message {index}: got [{string.Join(",", received.shape)}] {received.dtype}, expected [{string.Join(",", expected.shape)}] {expected.dtype}");
        if (!received.is_contiguous())
            throw new InvalidOperationException($"message {index}: received a non-contiguous tensor");
        if (!received.to_type(ScalarType.Float64).eq(expected.to_type(ScalarType.Float64)).all().item<bool>())
            throw new InvalidOperationException($"message {index} ([{string.Join(",", expected.shape)}] {expected.dtype}): the values differ");
    }
}

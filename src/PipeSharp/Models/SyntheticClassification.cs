using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Models;

/// <summary>
/// A learnable classification task made up on the spot: random inputs labelled by a fixed random "teacher"
/// projection, so the loss of a model trained on it falls. The same seed gives the same batches.
/// </summary>
public sealed class SyntheticClassification : IDisposable
{
    private readonly Generator _generator;
    private readonly Tensor _teacher;
    private readonly long[] _inputShape;
    private readonly int _pool;

    /// <summary>Inputs of shape [batch, ..<paramref name="sampleShape"/>], <paramref name="classes"/> labels.</summary>
    /// <param name="sampleShape">The shape of one sample, e.g. [64] for vectors or [3, 16, 16] for images.</param>
    /// <param name="classes">Number of classes.</param>
    /// <param name="seed">Seed of the teacher and of the batches.</param>
    public SyntheticClassification(long[] sampleShape, int classes, long seed)
    {
        _inputShape = sampleShape;
        _generator = new Generator((ulong)seed);
        // Images are labelled from a coarse average pool, so the task depends on spatial structure.
        _pool = sampleShape.Length == 3 ? (int)Math.Max(1, Math.Min(sampleShape[1], sampleShape[2]) / 4) : 1;
        long features = sampleShape.Length == 3
            ? sampleShape[0] * (sampleShape[1] / _pool) * (sampleShape[2] / _pool)
            : sampleShape.Aggregate(1L, (a, b) => a * b);
        _teacher = randn([features, classes], generator: _generator).DetachFromDisposeScope();
    }

    /// <summary>The next batch: inputs (float32) and class labels (int64).</summary>
    public (Tensor Input, Tensor Target) NextBatch(int batchSize)
    {
        using var scope = NewDisposeScope();
        var x = randn([batchSize, .. _inputShape], generator: _generator);
        var features = _inputShape.Length == 3 ? nn.functional.avg_pool2d(x, _pool).flatten(1) : x.flatten(1);
        var y = features.matmul(_teacher).argmax(1);
        return scope.MoveToOuter(x, y);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _teacher.Dispose();
        _generator.Dispose();
    }
}

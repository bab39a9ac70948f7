using PipeSharp.Boundaries;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>Splits a batch along dimension 0 into micro-batches (sizes differ by at most one).</summary>
internal static class MicroBatches
{
    /// <summary>
    /// Views of <paramref name="batch"/>, one per micro-batch; the first <c>N mod m</c> get one extra sample.
    /// </summary>
    /// <exception cref="ArgumentException">The batch has fewer samples than <paramref name="count"/>.</exception>
    public static Tensor[] Split(Tensor batch, int count, string parameterName = "input")
    {
        if (batch.dim() == 0)
            throw new ArgumentException($"{parameterName} is a scalar: it needs a batch dimension (dimension 0) to split into micro-batches.", parameterName);
        long n = batch.shape[0];
        if (n < count)
            throw new ArgumentException(
                $"{parameterName} has {n} samples but the pipeline splits each batch into {count} micro-batches: " +
                $"use a batch of at least {count} samples or set MicroBatches to at most {n}.", parameterName);
        return batch.tensor_split(count, 0);
    }

    /// <summary>
    /// Splits every tensor of <paramref name="batch"/> the same way: one set per micro-batch, holding a view of each.
    /// The tensors must have the same number of samples (checked by the caller).
    /// </summary>
    public static TensorSet[] Split(TensorSet batch, int count, string parameterName = "input")
    {
        var parts = batch.Select(t => (t.Key, Parts: Split(t.Value, count, batch.Count == 1 ? parameterName : $"{parameterName}['{t.Key}']"))).ToList();
        return Enumerable.Range(0, count).Select(i =>
        {
            var set = new TensorSet();
            foreach (var (name, p) in parts) set.Add(name, p[i]);
            return set;
        }).ToArray();
    }

}

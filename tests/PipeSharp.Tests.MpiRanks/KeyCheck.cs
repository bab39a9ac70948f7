using PipeSharp.Mpi;
using PipeSharp.Transport;
using static TorchSharp.torch;

namespace PipeSharp.Tests.MpiRanks;

/// <summary>
/// The full message key across processes: two ranks exchange one message for every (kind, consuming stage, sending stage,
/// value, micro-batch) of a 4-stage pipeline with 3 boundary values (stage s on rank s mod 2), each holding its own key in
/// its elements, half of them float tensors sent with requires_grad and the others float or integer tensors without.
/// Every message must arrive under its own key (no two keys share an MPI tag) with its flag. Prints
/// "rank R: N keyed messages checked".
/// </summary>
internal static class KeyCheck
{
    private const int Stages = 4, ValueCount = 3, MicroBatches = 2;

    public static void Run(MpiCluster cluster)
    {
        int peer = 1 - cluster.Rank;
        using var transport = new MpiTransport(cluster.Engine, Stages, MicroBatches, key => key.Stage % 2, ValueCount);
        var keys = (from kind in new[] { MessageKind.Activation, MessageKind.Gradient }
                    from stage in Enumerable.Range(0, Stages)
                    from sender in Enumerable.Range(-1, Stages + 2)
                    from value in Enumerable.Range(0, ValueCount)
                    from microBatch in Enumerable.Range(0, MicroBatches)
                    select new MessageKey(kind, stage, microBatch, sender, value)).ToList();
        foreach (var key in keys.Where(k => k.Stage % 2 == peer))
            transport.Send(key, Make(key, cluster.Rank));

        int count = 0;
        foreach (var key in keys.Where(k => k.Stage % 2 == cluster.Rank).Reverse())
        {
            using var received = transport.Receive(key, CancellationToken.None);
            using var expected = Make(key, peer);
            if (received.dtype != expected.dtype || received.requires_grad != expected.requires_grad || !Values(received).SequenceEqual(Values(expected)))
                throw new InvalidOperationException(
                    $"rank {cluster.Rank}: under {key} came a {received.dtype} tensor (requires_grad {received.requires_grad}) " +
                    $"[{string.Join(",", Values(received))}]");
            count++;
        }
        cluster.Barrier();
        Console.WriteLine($"rank {cluster.Rank}: {count} keyed messages checked (MPI tags up to {cluster.Engine.TagUpperBound})");
    }

    private static double[] Values(Tensor t)
    {
        using var d = t.detach().to(ScalarType.Float64);
        return d.data<double>().ToArray();
    }

    // Elements: kind, stage, sender, value, micro-batch and the sending rank; every third key an int64 tensor, every
    // other float one sent with requires_grad.
    private static Tensor Make(MessageKey key, int sender)
    {
        long[] content = [(long)key.Kind, key.Stage, key.From, key.Value, key.MicroBatch, sender];
        int n = ((((int)key.Kind * Stages + key.Stage) * (Stages + 2) + key.From + 1) * ValueCount + key.Value) * MicroBatches + key.MicroBatch;
        if (n % 3 == 0) return tensor(content);
        var t = tensor(content).to(ScalarType.Float32);
        return n % 2 == 0 ? t.requires_grad_(true) : t;
    }
}

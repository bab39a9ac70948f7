using PipeSharp.Mpi;
using PipeSharp.Transport;

namespace PipeSharp.Tests.MpiRanks;

/// <summary>
/// Two ranks exchange messages through MpiTransport and check every one: shape, dtype and every element, for shapes
/// that change from message to message (more of them than a channel has slots, so slots are taken over), for dtypes
/// of 1 to 8 bytes, for sizes from empty through the spare-tensor limit to the receive-buffer pool, for non-contiguous
/// tensors, for several messages under one key (delivered in send order), and for receives in another order than the
/// sends (matched by key). Both ranks send and receive at once. Prints "rank R: N messages checked".
/// </summary>
internal static class TransportCheck
{
    public static void Run(MpiCluster cluster)
    {
        int peer = 1 - cluster.Rank;
        // Rank 0 sends activations for stage 1 (rank 1), rank 1 sends gradients for stage 0 (rank 0): one channel each way.
        using var transport = new MpiTransport(cluster.Engine, stages: 2, microBatches: Messages.MicroBatches, key => key.Stage);
        var outgoing = cluster.Rank == 0 ? MessageKind.Activation : MessageKind.Gradient;
        var incoming = cluster.Rank == 0 ? MessageKind.Gradient : MessageKind.Activation;
        int sendStage = peer, receiveStage = cluster.Rank;

        // Everything is sent before anything is received: the transport must take messages in as they arrive, whatever
        // the receiver waits for.
        var plan = Messages.Plan();
        foreach (var (microBatch, index) in plan)
            transport.Send(new MessageKey(outgoing, sendStage, microBatch), Messages.Make(index, cluster.Rank));

        // Received in reverse micro-batch order; under one micro-batch, in send order.
        int checkedCount = 0;
        foreach (var group in plan.GroupBy(p => p.MicroBatch).OrderByDescending(g => g.Key))
            foreach (var (microBatch, index) in group)
            {
                using var received = transport.Receive(new MessageKey(incoming, receiveStage, microBatch), CancellationToken.None);
                Messages.Check(received, index, peer);
                checkedCount++;
            }
        cluster.Barrier();
        Console.WriteLine($"rank {cluster.Rank}: {checkedCount} messages checked");
    }
}

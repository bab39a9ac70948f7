using PipeSharp.Models;
using PipeSharp.Mpi;
using PipeSharp.Runtime;
using PipeSharp.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests.MpiRanks;

/// <summary>
/// Skips go straight from the process that makes them to the process that reads them. The U-Net-like model (down1,
/// down2 | down3, middle | up3, up2 | up1, head) under zb-v on 2 ranks: pieces 0..3 on ranks 0, 1, 1, 0. Piece 0 makes
/// skip1 and skip2, read by pieces 3 and 2; piece 1 makes skip3, read by piece 2. Over one step of 2 micro-batches each
/// rank counts the messages it sent to each rank: direct sends give the figures below, a relay through the pieces in
/// between would give others (skip1 would leave rank 0 for rank 1 and come back). Prints "rank R: skips sent directly".
/// </summary>
internal static class SkipCheck
{
    public static void Run(MpiCluster cluster)
    {
        manual_seed(3);
        using var model = UNetLike.Create(inputSize: 12, width: 16, depth: 3, classes: 5);
        using var pipe = new Pipeline(model,
            new PipelineOptions { Ranks = 2, Balance = [2, 2, 2, 2], Schedule = "zb-v", MicroBatches = 2, ThreadsPerRank = 1, Backend = cluster },
            (o, y) => nn.functional.cross_entropy(o, y), ps => optim.SGD(ps, 0.01));
        var g = new Generator(5);
        using var x = randn([8, 12], generator: g);
        using var y = randint(0, 5, [8], generator: g);
        pipe.TrainStep(x, y);

        var transport = (MpiTransport)pipe.Replicas[0].Transport;
        // (activations to rank 0, to rank 1, gradients to rank 0, to rank 1), per rank, for 2 micro-batches:
        //   rank 0: x and skip2 to rank 1, skip1 to itself (piece 3); gradients of x (piece 3 -> 2) to rank 1, of skip1 to itself.
        //   rank 1: x and skip3 to itself (piece 1 -> 2), x to rank 0 (piece 2 -> 3); gradients of x and skip3 to itself,
        //           of skip2 (piece 2 -> 0) and x (piece 1 -> 0) to rank 0.
        long[] expected = cluster.Rank == 0 ? [2, 4, 2, 2] : [2, 4, 4, 4];
        long[] counted =
        [
            transport.MessagesSent(0, MessageKind.Activation), transport.MessagesSent(1, MessageKind.Activation),
            transport.MessagesSent(0, MessageKind.Gradient), transport.MessagesSent(1, MessageKind.Gradient),
        ];
        if (!counted.SequenceEqual(expected))
            throw new InvalidOperationException(
                $"rank {cluster.Rank} sent (activations to 0, to 1, gradients to 0, to 1) [{string.Join(", ", counted)}], expected [{string.Join(", ", expected)}]");
        cluster.Barrier();
        Console.WriteLine($"rank {cluster.Rank}: skips sent directly");
    }
}

using PipeSharp.Models;
using PipeSharp.Mpi;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.MpiRanks;

/// <summary>
/// The bytes an evaluation sends over MPI do not grow with the vocabulary: a GPT on 2 ranks (one process each) at two
/// vocabulary sizes, a batch evaluated with <see cref="Pipeline.Evaluate(Tensor, Tensor, CancellationToken)"/> and with
/// <see cref="Pipeline.Forward"/> plus the loss, the bytes both processes' transports send counted for each. Forward
/// sends the logits to every process (B x T x V floats), so its bytes grow by B x T x dV x 4; Evaluate's stay the
/// same. Both give the same loss. Then 2 replicas of one rank: Evaluate sums the replicas' shares. Prints
/// "rank R: evaluation bytes do not grow with the vocabulary (...)".
/// </summary>
internal static class EvaluationCheck
{
    private const int Batch = 4, Context = 16;

    public static void Run(MpiCluster cluster)
    {
        int[] vocabularies = [64, 576];
        var evaluate = new long[2];
        var forward = new long[2];
        for (int v = 0; v < vocabularies.Length; v++)
            (evaluate[v], forward[v]) = Bytes(cluster, vocabularies[v]);

        long growth = (long)Batch * Context * (vocabularies[1] - vocabularies[0]) * sizeof(float);
        string figures = $"Evaluate {evaluate[0]} and {evaluate[1]} bytes, Forward {forward[0]} and {forward[1]} bytes " +
                         $"at vocabularies {vocabularies[0]} and {vocabularies[1]}";
        if (evaluate[1] != evaluate[0])
            throw new InvalidOperationException($"rank {cluster.Rank}: the bytes of an evaluation grow with the vocabulary: {figures}");
        if (forward[1] - forward[0] != growth)
            throw new InvalidOperationException($"rank {cluster.Rank}: expected Forward's bytes to grow by B x T x dV x 4 = {growth}: {figures}");

        Replicas(cluster);
        Console.WriteLine($"rank {cluster.Rank}: evaluation bytes do not grow with the vocabulary ({figures}; Forward grows by {growth})");
    }

    // Both processes' transport bytes during one Evaluate and during one Forward (with the loss), summed over the job.
    private static (long Evaluate, long Forward) Bytes(MpiCluster cluster, int vocabulary)
    {
        var config = new GptConfig(vocabulary, ContextLength: Context, Layers: 2, Width: 32, Heads: 2);
        manual_seed(1);
        using var model = Gpt.Create(config);
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 2, ThreadsPerRank = 1, Backend = cluster },
            Gpt.Loss, ps => optim.SGD(ps, 0.01));
        var transport = (MpiTransport)pipe.Replicas[0].Transport;
        var g = new Generator(5);
        using var x = randint(0, vocabulary, [Batch, Context], generator: g);
        using var y = randint(0, vocabulary, [Batch, Context], generator: g);

        long start = transport.BytesSent;
        float evaluated = pipe.Evaluate(x, y);
        long afterEvaluate = transport.BytesSent;
        float expected;
        using (var logits = pipe.Forward(x)) expected = Gpt.Loss(logits, y).item<float>();
        long afterForward = transport.BytesSent;
        Compare(cluster, $"vocabulary {vocabulary}", evaluated, expected);
        var sums = cluster.AllReduceSum([afterEvaluate - start, afterForward - afterEvaluate]);
        return (sums[0], sums[1]);
    }

    // Two replicas of a one-rank pipeline, one per process: the loss is both replicas' shares summed.
    private static void Replicas(MpiCluster cluster)
    {
        var config = new GptConfig(64, ContextLength: Context, Layers: 2, Width: 32, Heads: 2);
        manual_seed(2);
        using var model = Gpt.Create(config);
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 1, Replicas = 2, MicroBatches = 2, ThreadsPerRank = 1, Backend = cluster },
            Gpt.Loss, ps => optim.SGD(ps, 0.01));
        var g = new Generator(6);
        using var x = randint(0, 64, [2 * Batch + 1, Context], generator: g);
        using var y = randint(0, 64, [2 * Batch + 1, Context], generator: g);
        float evaluated = pipe.Evaluate(x, y);
        using var logits = pipe.Forward(x);
        Compare(cluster, "2 replicas", evaluated, Gpt.Loss(logits, y).item<float>());
    }

    private static void Compare(MpiCluster cluster, string what, float evaluated, float expected)
    {
        if (Math.Abs(evaluated - expected) > 1e-5 * Math.Max(1, Math.Abs(expected)))
            throw new InvalidOperationException($"rank {cluster.Rank}, {what}: Evaluate gave {evaluated}, the loss of Forward {expected}");
    }
}

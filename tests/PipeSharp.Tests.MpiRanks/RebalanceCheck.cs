using PipeSharp.Checkpoints;
using PipeSharp.Construction;
using PipeSharp.Models;
using PipeSharp.Mpi;
using PipeSharp.Runtime;
using PipeSharp.Tracing;
using static TorchSharp.torch;

namespace PipeSharp.Tests.MpiRanks;

/// <summary>
/// Layers moved between processes while training (<see cref="Pipeline.Rebalance"/>): with forced moves every two
/// steps, a GPT with a tied embedding (AdamW) and an MLP (SGD with momentum) train exactly as the unmoved run of one
/// process (losses and this process's final parameters within 1e-6); on 4 processes, 2 ranks x 2 replicas move alike;
/// a layer moved away frees its memory on the old process. Prints "rank R: moved runs equal the unmoved run (N processes)".
/// </summary>
internal static class RebalanceCheck
{
    private static GptConfig Config => ConstructionCheck.Config; // the same tiny GPT

    public static void Run(MpiCluster cluster)
    {
        int n = cluster.Size;
        var batches = TokenBatches(8);
        var gpt = Gpt.Spec(Config, seed: 5);
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> adamW = ps => optim.AdamW(ps, 3e-3);
        if (n == 2 || n == 4)
        {
            int replicas = n / 2;
            Check(cluster, "gpt", gpt, new PipelineOptions { Balance = [3, 3], Replicas = replicas, MicroBatches = 4 }, Gpt.Loss, adamW, batches,
                new() { [2] = [4, 2], [4] = [1, 5], [6] = [2, 4] });
        }
        else
        {
            int[] start = [.. Enumerable.Repeat(1, n - 1), 6 - (n - 1)];
            Check(cluster, "gpt", gpt, new PipelineOptions { Balance = start, MicroBatches = 4 }, Gpt.Loss, adamW, batches,
                new() { [2] = [6 - (n - 1), .. Enumerable.Repeat(1, n - 1)], [4] = [.. Enumerable.Repeat(1, n - 1), 6 - (n - 1)] });
        }
        if (n == 2)
        {
            var mlp = Mlp.Spec(12, 12, 12, 4, seed: 3);
            var gen = new Generator(11);
            var data = Enumerable.Range(0, 8).Select(_ => (randn([16, 12], generator: gen), randn([16, 12], generator: gen))).ToList();
            Check(cluster, "mlp", mlp, new PipelineOptions { Balance = [2, 2], MicroBatches = 4 }, (o, y) => nn.functional.mse_loss(o, y),
                ps => optim.SGD(ps, 0.05, momentum: 0.9), data, new() { [2] = [3, 1], [4] = [1, 3], [6] = [2, 2] });
            FreesMovedLayers(cluster);
        }
        Console.WriteLine($"rank {cluster.Rank}: moved runs equal the unmoved run ({n} processes)");
    }

    private static void Check(MpiCluster cluster, string name, ModelSpec spec, PipelineOptions options, Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer, List<(Tensor, Tensor)> batches, Dictionary<int, int[]> moves)
    {
        options = options with { ThreadsPerRank = 1 };
        using var alone = new Pipeline(spec, options, loss, optimizer); // every rank a thread of this process: the reference
        var expected = batches.Select(b => alone.TrainStep(b.Item1, b.Item2)).ToList();
        using var moving = new Pipeline(spec, options with { Backend = cluster }, loss, optimizer);
        for (int k = 0; k < batches.Count; k++)
        {
            float l = moving.TrainStep(batches[k].Item1, batches[k].Item2);
            if (Math.Abs(l - expected[k]) > 1e-6)
                throw new InvalidOperationException($"rank {cluster.Rank}, {name}: step {k + 1}: loss {l} with moves, {expected[k]} in one process unmoved");
            if (moves.GetValueOrDefault(k + 1) is { } balance) moving.Rebalance(balance);
        }
        var reference = alone.StateDict();
        var mine = moving.StateDict();
        foreach (var (param, t) in mine)
        {
            double d = (t - reference[param]).abs().max().item<float>();
            if (d > 1e-6) throw new InvalidOperationException($"rank {cluster.Rank}, {name}: {param} differs by {d:E2} from the unmoved run");
        }
        if (moving.SharedParameterDrift() != 0) throw new InvalidOperationException($"rank {cluster.Rank}, {name}: the tied copies differ");
        var held = moving.Stages.SelectMany(s => Enumerable.Range(s.FirstLayer, s.LayerCount));
        Console.WriteLine($"rank {cluster.Rank}: {name}: {moving.Moves.Count} moves ({string.Join("; ", moving.Moves)}), holds layers {string.Join(",", held)}, " +
                          $"{mine.Count} tensors equal");
        foreach (var t in mine.Values.Concat(reference.Values)) t.Dispose();
    }

    // A 4 MB layer (with its gradient and AdamW's two moments, 16 MB) moved from rank 0 to rank 1: the old process's
    // native heap shrinks by at least the layer's parameters and gradient, the new one's grows by as much.
    private static void FreesMovedLayers(MpiCluster cluster)
    {
        using var pipe = new Pipeline(Mlp.Spec(1024, 1024, 1024, 4, seed: 1),
            new PipelineOptions { Balance = [2, 2], MicroBatches = 2, ThreadsPerRank = 1, Backend = cluster }, (o, y) => nn.functional.mse_loss(o, y),
            ps => optim.AdamW(ps, 1e-3));
        using var x = randn(4, 1024);
        pipe.TrainStep(x, x);
        GC.Collect();
        long before = NativeHeap.BytesInUse() ?? throw new PlatformNotSupportedException("mallinfo2 is not available here.");
        pipe.Rebalance([1, 3]);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long after = NativeHeap.BytesInUse()!.Value;
        long layer = 2L * (1024 * 1024 + 1024) * 4; // parameters and gradients of layer 1
        long change = after - before;
        if (cluster.Rank == 0 && change > -layer)
            throw new InvalidOperationException($"rank 0 moved layer 1 away but its heap changed by {change / 1e6:F1} MB (expected at most {-layer / 1e6:F1} MB)");
        if (cluster.Rank == 1 && change < layer)
            throw new InvalidOperationException($"rank 1 received layer 1 but its heap changed by {change / 1e6:F1} MB (expected at least {layer / 1e6:F1} MB)");
        if (pipe.Stages.Any(s => s.named_parameters().Any(p => p.name.StartsWith("1.")) != (cluster.Rank == 1)))
            throw new InvalidOperationException($"rank {cluster.Rank}: layer 1 is held by the wrong rank after the move");
        pipe.TrainStep(x, x);
        Console.WriteLine($"rank {cluster.Rank}: moving layer 1 changed this process's heap by {change / 1e6:F1} MB");
    }

    private static List<(Tensor, Tensor)> TokenBatches(int count)
    {
        var gen = new Generator(3);
        return Enumerable.Range(0, count).Select(_ =>
        {
            var tokens = randint(0, Config.VocabularySize, [8, Config.ContextLength + 1], generator: gen);
            return (tokens[.., ..Config.ContextLength], tokens[.., 1..]);
        }).ToList();
    }
}

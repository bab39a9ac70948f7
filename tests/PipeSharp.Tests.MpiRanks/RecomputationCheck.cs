using PipeSharp.Checkpoints;
using PipeSharp.Models;
using PipeSharp.Mpi;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.MpiRanks;

/// <summary>
/// Under MPI (one rank per process, so each process's generator is drawn from by one thread only), a GPT with dropout
/// 0.1 and a tied embedding trained on 2 ranks with full recomputation, and with every block recomputed, under 1f1b and
/// under zb-v (split backward, 2 stages per rank), ends with the parameters of the same training without
/// recomputation, within 1e-6, on every stage. Prints "rank R: recomputation trains as without it (...)".
/// </summary>
internal static class RecomputationCheck
{
    private static readonly GptConfig Config = new(VocabularySize: 16, ContextLength: 8, Layers: 4, Width: 16, Heads: 2, Dropout: 0.1);

    public static void Run(MpiCluster cluster)
    {
        var figures = new List<string>();
        foreach (var schedule in new[] { "1f1b", "zb-v" })
        {
            var reference = Train(cluster, schedule, Recomputation.None);
            foreach (var (name, recomputation) in new[] { ("full", Recomputation.Full), ("blocks", Recomputation.Layers(1, 2, 3, 4)) })
            {
                var state = Train(cluster, schedule, recomputation);
                double diff = 0;
                foreach (var (key, t) in reference) diff = Math.Max(diff, (t - state[key]).abs().max().item<float>());
                foreach (var t in state.Values) t.Dispose();
                var all = new double[cluster.Size];
                all[cluster.Rank] = diff;
                double max = cluster.AllReduceSum(all).Max();
                if (!(max <= 1e-6))
                    throw new InvalidOperationException($"rank {cluster.Rank}: {schedule} with {name} recomputation is {max:E2} from training without it");
                figures.Add($"{schedule} {name}: {max:E1}");
            }
            foreach (var t in reference.Values) t.Dispose();
        }
        Console.WriteLine($"rank {cluster.Rank}: recomputation trains as without it (max difference {string.Join(", ", figures)})");
    }

    // This process's stages after 3 steps, by model name; the global generator seeded alike before each run.
    private static Dictionary<string, Tensor> Train(MpiCluster cluster, string schedule, Recomputation recomputation)
    {
        manual_seed(1);
        using var model = Gpt.Create(Config);
        using var pipe = new Pipeline(model,
            new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = schedule, ThreadsPerRank = 1, Backend = cluster, Recomputation = recomputation },
            Gpt.Loss, ps => optim.Adam(ps, 1e-3));
        var g = new Generator(3);
        manual_seed(2);
        for (int step = 0; step < 3; step++)
        {
            using var tokens = randint(0, Config.VocabularySize, [8, Config.ContextLength + 1], generator: g);
            using var x = tokens[.., ..Config.ContextLength];
            using var y = tokens[.., 1..];
            pipe.TrainStep(x, y);
        }
        return pipe.StateDict().ToDictionary(p => p.Key, p => p.Value);
    }
}

using System.Security.Cryptography;
using PipeSharp.Construction;
using PipeSharp.Models;
using PipeSharp.Mpi;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.MpiRanks;

/// <summary>
/// A GPT built from its spec over MPI, in three layouts (2 ranks 1F1B, 2 ranks x 2 stages interleaved, 2 replicas of
/// one rank): this process calls the factories of its own stages' layers only, each once, and its parameters are
/// bitwise those of the spec built whole in one process (SHA-256 per parameter). Prints
/// "rank R: builds its own layers only, bitwise equal to one process".
/// </summary>
internal static class ConstructionCheck
{
    internal static readonly GptConfig Config = new(VocabularySize: 13, ContextLength: 8, Layers: 4, Width: 16, Heads: 2);

    public static void Run(MpiCluster cluster)
    {
        var spec = Gpt.Spec(Config, seed: 5);
        Dictionary<string, string> expected;
        using (var whole = spec.Build()) expected = Hashes(whole.state_dict());
        expected["head.lm_head.weight"] = expected["embed.wte.weight"]; // the tie, under the head's name too

        foreach (var (name, options) in new[]
                 {
                     ("1f1b", new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = "1f1b" }),
                     ("interleaved", new PipelineOptions { Ranks = 2, StagesPerRank = 2, MicroBatches = 4, Schedule = "interleaved" }),
                     ("replicas", new PipelineOptions { Ranks = 1, Replicas = 2, MicroBatches = 2, Schedule = "1f1b" }),
                 })
        {
            var calls = new int[spec.Layers.Count];
            var counted = new ModelSpec(spec.Layers.Select((l, i) => l with { Build = d => { calls[i]++; return l.Build(d); } }), spec.Seed, spec.Ties);
            using var pipe = new Pipeline(counted, options with { Backend = cluster, ThreadsPerRank = 1 }, Gpt.Loss, ps => optim.AdamW(ps, 1e-3));
            var own = pipe.Stages.SelectMany(s => Enumerable.Range(s.FirstLayer, s.LayerCount)).ToHashSet();
            for (int i = 0; i < calls.Length; i++)
                if (calls[i] != (own.Contains(i) ? 1 : 0))
                    throw new InvalidOperationException(
                        $"rank {cluster.Rank}, {name}: layer {i} was built {calls[i]} times; this process holds layers {string.Join(",", own.Order())}");
            var state = pipe.StageStates();
            foreach (var (param, hash) in Hashes(state))
                if (expected[param] != hash)
                    throw new InvalidOperationException($"rank {cluster.Rank}, {name}: {param} differs from the spec built whole in one process");
            foreach (var t in state.Values) t.Dispose();
            if (pipe.SharedParameterDrift() != 0) throw new InvalidOperationException($"rank {cluster.Rank}, {name}: the tied copies differ");
            Console.WriteLine($"rank {cluster.Rank}: {name}: built layers {string.Join(",", own.Order())} ({state.Count} tensors checked)");
        }
        // The native heap once a 16 MB model (4 layers of 4 MB) is built from its spec on 2 ranks: this rank's half.
        long start = Tracing.NativeHeap.BytesInUse() ?? throw new PlatformNotSupportedException("mallinfo2 is not available here.");
        using (var big = new Pipeline(Mlp.Spec(1024, 1024, 1024, 4, seed: 1),
                   new PipelineOptions { Ranks = 2, MicroBatches = 2, ThreadsPerRank = 1, Backend = cluster }, (o, y) => nn.functional.mse_loss(o, y), ps => optim.SGD(ps, 0.01)))
        {
            long held = Tracing.NativeHeap.BytesInUse()!.Value - start;
            long own = big.Stages.Sum(st => st.parameters().Sum(p => p.numel() * p.element_size()));
            if (held > own + own / 4)
                throw new InvalidOperationException($"rank {cluster.Rank}: holds {held >> 20} MB once built, its stages {own >> 20} MB");
            Console.WriteLine($"rank {cluster.Rank}: a 16 MB spec model on 2 ranks: {held / 1e6:F1} MB held once built, its stages {own / 1e6:F1} MB");
        }
        Console.WriteLine($"rank {cluster.Rank}: builds its own layers only, bitwise equal to one process");
    }

    // The parameters and buffers of this process's stages by model name.
    private static Dictionary<string, Tensor> StageStates(this Pipeline pipe) =>
        Checkpoints.PipelineState.StateDict(pipe).ToDictionary(kv => kv.Key, kv => kv.Value);

    internal static Dictionary<string, string> Hashes(IEnumerable<KeyValuePair<string, Tensor>> state) =>
        state.ToDictionary(kv => kv.Key, kv =>
        {
            using var cpu = kv.Value.detach().cpu().contiguous();
            return Convert.ToHexStringLower(SHA256.HashData(cpu.bytes));
        });
}

using PipeSharp.Models;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>Tests that measure the whole process, so no other test may run beside them.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessWideCollection
{
    public const string Name = "process-wide measurements";
}

/// <summary>Native memory stays flat over thousands of steps.</summary>
[Collection(ProcessWideCollection.Name)]
public class MemoryTests
{
    private static long ResidentBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:")) return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return Environment.WorkingSet;
    }

    // Two ranks in a pipeline; one rank in each of two replicas, whose workers sum the replicas' gradients (with
    // clipping, so that the norms are measured on the workers and every gradient scaled).
    [Theory]
    [InlineData(2, 1)]
    [InlineData(1, 2)]
    public void Two_thousand_steps_keep_native_memory_flat(int ranks, int replicas)
    {
        using var data = new SyntheticClassification([32], 8, seed: 2);
        using var pipe = new Pipeline(() => { manual_seed(6); return Mlp.Create(32, 64, 8, 4); }, new PipelineOptions
            {
                Ranks = ranks, Replicas = replicas, MicroBatches = 4 / replicas, Schedule = "1f1b", ThreadsPerRank = 1,
                MaxGradNorm = replicas > 1 ? 1e-3 : null,
            },
            EquivalenceTests.CrossEntropy, ps => optim.Adam(ps, 1e-3));
        var (x, y) = data.NextBatch(32);

        void Run(int steps)
        {
            for (int i = 0; i < steps; i++)
            {
                pipe.TrainStep(x, y);
                if (i % 50 == 0) pipe.Forward(x).Dispose();
            }
        }

        // Warm-up: optimizer state, and the allocators' caches, which grow for the first ~1,000 steps (by 11-15 MiB
        // after 500 steps, 15-17 MiB after 1,000, then less than 1 MiB per 1,000 steps) and are not a leak.
        Run(1200);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long tensorsBefore = Tensor.TotalCount, rssBefore = ResidentBytes();
        Run(2000);
        // Both read before any collection: a tensor left to the garbage collector's finalizer counts as a leak, and so
        // does native memory that only a collection the process never makes would give back (the no-GC regions of
        // several workers once took the place of every collection: Native/CollectionPause).
        long tensorsAfter = Tensor.TotalCount, rssAfter = ResidentBytes();

        Assert.Equal(tensorsBefore, tensorsAfter);
        long bound = 16L << 20;
        Assert.True(rssAfter - rssBefore < bound, $"resident memory grew by {(rssAfter - rssBefore) >> 20} MiB over 2000 steps");
    }
}

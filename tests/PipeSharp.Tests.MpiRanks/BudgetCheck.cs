using PipeSharp.Memory;
using PipeSharp.Models;
using PipeSharp.Mpi;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.MpiRanks;

/// <summary>
/// A rank of a 2-process GPT pipeline with a memory budget: its measured peak (its own process's native heap, one
/// rank per process) agrees with its own predicted peak within 15%. (The model is sized so that MPICH's own few MB per
/// process, which the model does not predict, stay a small share.)
/// Prints "rank R: measured peak agrees with its prediction".
/// </summary>
internal static class BudgetCheck
{
    public static void Run(MpiCluster cluster)
    {
        var config = new GptConfig(VocabularySize: 64, ContextLength: 128, Layers: 4, Width: 256, Heads: 4);
        manual_seed(3);
        var g = new Generator(5);
        using var x = randint(0, 64, [16, 128], generator: g);
        using var y = randint(0, 64, [16, 128], generator: g);
        using var model = Gpt.Create(config);
        using var pipe = new Pipeline(model,
            new PipelineOptions { Ranks = 2, MicroBatches = 4, ThreadsPerRank = 1, Backend = cluster, MemoryPerDevice = [4L << 30] },
            Gpt.Loss, ps => optim.AdamW(ps, 1e-3));
        for (int step = 0; step < 3; step++) pipe.TrainStep(x, y);
        var stats = pipe.LastStep!;
        var mine = pipe.PredictedMemory!.Ranks[cluster.Rank];
        long measured = stats.PeakMemoryBytes ?? throw new InvalidOperationException("no measured peak (is the heap readable here?)");
        string figures = $"measured {MemorySize.Format(measured)}, predicted {MemorySize.Format(mine.TotalBytes)} ({mine})";
        if (stats.PredictedMemoryBytes != mine.TotalBytes)
            throw new InvalidOperationException($"rank {cluster.Rank}: the step reports {stats.PredictedMemoryBytes} as predicted, not this rank's {mine.TotalBytes}");
        if (cluster.Rank == 1 && pipe.PredictedMemory!.Ranks[1].PeakMicroBatches > 0 && mine.BoundaryBytes <= 0)
            throw new InvalidOperationException($"rank {cluster.Rank}: across processes a rank receives into buffers of its own, but none are predicted: {figures}");
        double ratio = (double)measured / mine.TotalBytes;
        if (ratio is < 0.85 or > 1.15)
            throw new InvalidOperationException($"rank {cluster.Rank}: measured and predicted peaks differ by more than 15% (ratio {ratio:0.000}): {figures}");
        Console.WriteLine($"rank {cluster.Rank}: measured peak agrees with its prediction (ratio {ratio:0.000}; {figures})");
    }
}

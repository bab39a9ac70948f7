using PipeSharp.Mpi;
using PipeSharp.Runtime;
using PipeSharp.Tracing;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests.MpiRanks;

/// <summary>
/// A rank builds a 4-layer model of 16 MB, and a 2-stage pipeline over MPI from it: once the pipeline is built, the
/// rank's native heap holds its own stage (8 MB), not the whole model, without any garbage collection in between.
/// Then one training step, to show the pipeline still trains. Prints "rank R: holds its own stages only".
/// </summary>
internal static class MemoryCheck
{
    private const int Width = 1024; // 4 MB per layer of float32 weights

    public static void Run(MpiCluster cluster)
    {
        long start = Heap();
        manual_seed(1);
        using var model = nn.Sequential(
            ("0", nn.Linear(Width, Width)), ("1", nn.Linear(Width, Width)),
            ("2", nn.Linear(Width, Width)), ("3", nn.Linear(Width, Width)));
        long modelBytes = Heap() - start;
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 2, ThreadsPerRank = 1, Backend = cluster },
            (o, y) => nn.functional.mse_loss(o, y), ps => optim.SGD(ps, 0.01));
        long held = Heap() - start;
        long own = pipe.Stages.Sum(s => s.parameters().Sum(p => p.numel() * p.element_size()));

        string figures = $"model {modelBytes >> 20} MB, this rank's stages {own >> 20} MB, held once the pipeline is built {held >> 20} MB";
        if (own * 3 > modelBytes * 2 || own * 3 < modelBytes)
            throw new InvalidOperationException($"rank {cluster.Rank}: expected about half the model in this rank's stages: {figures}");
        // The other half freed; a quarter of the model's size covers what building the pipeline itself allocates.
        if (held > own + modelBytes / 4)
            throw new InvalidOperationException($"rank {cluster.Rank}: still holds the stages it does not train: {figures}");

        var g = new Generator(7);
        using var x = randn([8, Width], generator: g);
        using var y = randn([8, Width], generator: g);
        pipe.TrainStep(x, y);
        Console.WriteLine($"rank {cluster.Rank}: holds its own stages only ({figures})");
    }

    private static long Heap() => NativeHeap.BytesInUse() ?? throw new PlatformNotSupportedException("mallinfo2 is not available here.");
}

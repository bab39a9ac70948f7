using PipeSharp.Models;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Recompute;

/// <summary>
/// The memory a forward keeps per micro-batch, measured through the action interpreter (<see cref="Pipeline.MeasureMemory"/>),
/// is smaller with recomputation: with full recomputation a stage keeps its inputs (and what it sends), not its graph.
/// It reads the process-wide native heap, so it runs alone (beside other tests a stage once read ten times its figure).
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class RecomputationMemoryTests
{
    private static readonly GptConfig Config = new(VocabularySize: 32, ContextLength: 64, Layers: 4, Width: 64, Heads: 4);

    private static IReadOnlyList<StageMemory> Measure(Recomputation recomputation, Tensor sample)
    {
        manual_seed(3);
        using var model = Gpt.Create(Config);
        using var pipe = new Pipeline(model,
            new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = "1f1b", ThreadsPerRank = 1, Recomputation = recomputation },
            Gpt.Loss, ps => optim.SGD(ps, 0.01));
        pipe.MeasureMemory(sample); // the first forwards on fresh worker threads also make the threads' own native caches
        // Tensors left to the garbage collector would free native memory while the heap is read.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        return pipe.MeasureMemory(sample);
    }

    [Fact]
    public void A_forward_keeps_less_per_micro_batch_with_recomputation()
    {
        if (!OperatingSystem.IsLinux()) return; // the native heap is read with glibc's mallinfo2
        using var sample = randint(0, Config.VocabularySize, [16, Config.ContextLength], generator: new Generator(1));
        var none = Measure(Recomputation.None, sample);
        var full = Measure(Recomputation.Full, sample);
        var blocks = Measure(Recomputation.Layers(1, 2, 3, 4), sample);
        string figures = string.Join("; ", none.Select((m, s) =>
            $"stage {s}: none {m.ActivationBytesPerMicroBatch}, full {full[s].ActivationBytesPerMicroBatch}, blocks {blocks[s].ActivationBytesPerMicroBatch} bytes"));
        for (int s = 0; s < none.Count; s++)
        {
            long kept = none[s].ActivationBytesPerMicroBatch!.Value;
            Assert.True(kept > 0, figures);
            // Full: each stage keeps its input and output (4 x 64 x 64 floats each), a small part of its graph.
            Assert.True(full[s].ActivationBytesPerMicroBatch * 5 < kept, figures);
            // Blocks: each block keeps only its input; the embedding's and the head's graphs are kept.
            Assert.True(blocks[s].ActivationBytesPerMicroBatch * 2 < kept, figures);
            Assert.Equal(none[s].PeakMicroBatches, full[s].PeakMicroBatches);
        }
    }
}

using System.Diagnostics;
using System.Globalization;
using PipeSharp.Data;
using PipeSharp.Models;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Bench.Speed;

/// <summary>
/// Issue 12's recomputation targets on the character GPT of issue 11 (4 layers, width 192, context 128, batch 16, tiny
/// Shakespeare) with 8 micro-batches on 2 ranks (1f1b, 1 intra-op thread each): the activation memory each rank holds
/// at the schedule's peak (measured through the action interpreter, Pipeline.MeasureMemory) and the step time, without
/// and with full recomputation, side by side. Targets: memory at most 1/3 of no recomputation, time at most 1.4x.
/// Usage: dotnet run -c Release --project bench/PipeSharp.Bench.Gpt -- --recompute [--rounds 3 --steps 3]
/// </summary>
internal static class RecomputeBench
{
    public static int Run(string[] args, string corpusPath)
    {
        int rounds = BenchFacts.Arg(args, "--rounds", 3), steps = BenchFacts.Arg(args, "--steps", 3);
        var corpus = TextCorpus.Load(corpusPath);
        var config = new GptConfig(corpus.Tokenizer.VocabularySize, ContextLength: 128, Layers: 4, Width: 192, Heads: 4);
        const int batch = 16, microBatches = 8;
        Console.WriteLine($"PipeSharp activation recomputation (issue 12): {Environment.ProcessorCount} CPUs, load {BenchFacts.Load()}");
        Console.WriteLine($"model: GPT 4 layers, width 192, context 128, 4 heads, vocabulary {config.VocabularySize}; batch {batch}, " +
                          $"{microBatches} micro-batches, 2 ranks, 1f1b, 1 thread per rank, AdamW; {rounds} rounds x {steps} steps");
        using var none = Make(config, microBatches, Recomputation.None);
        using var full = Make(config, microBatches, Recomputation.Full);

        var (x, y) = corpus.Batch(CorpusSplit.Train, 0, batch, config.ContextLength, 0);
        var memoryNone = Memory(none, x);
        var memoryFull = Memory(full, x);
        bool pass = true;
        Console.WriteLine();
        Console.WriteLine($"{"activation memory held at the peak",-36} {"none",10} {"full",10} {"full/none",10}   (+ one re-run: full+1/none)");
        for (int s = 0; s < memoryNone.Count; s++)
        {
            long a = memoryNone[s].PeakActivationBytes ?? 0, b = memoryFull[s].PeakActivationBytes ?? 0;
            // While a recomputing backward runs, one micro-batch's graph exists again: about what none keeps per micro-batch.
            long rerun = b + (memoryNone[s].ActivationBytesPerMicroBatch ?? 0);
            double ratio = b / (double)a;
            bool ok = ratio <= 1.0 / 3;
            pass &= ok;
            Console.WriteLine($"{(ok ? "PASS" : "FAIL")}  rank {s} ({memoryNone[s].PeakMicroBatches} micro-batches held) {Mb(a),10} {Mb(b),10} {ratio,10:F3}   " +
                              $"(target <= 0.333; {rerun / (double)a:F3})");
        }

        // Step time: the two pipelines alternate, each round in the other order; a round's ratio is full/none.
        Time(none, corpus, config, batch, 1, 1000);
        Time(full, corpus, config, batch, 1, 1000);
        var ratios = new List<double>();
        var cpuRatios = new List<double>();
        var noneTimes = new List<double>();
        var fullTimes = new List<double>();
        for (int r = 0; r < rounds; r++)
        {
            (double Wall, double Cpu) a, b;
            if (r % 2 == 0) { a = Time(none, corpus, config, batch, steps, r * steps); b = Time(full, corpus, config, batch, steps, r * steps); }
            else { b = Time(full, corpus, config, batch, steps, r * steps); a = Time(none, corpus, config, batch, steps, r * steps); }
            noneTimes.Add(a.Wall);
            fullTimes.Add(b.Wall);
            ratios.Add(b.Wall / a.Wall);
            cpuRatios.Add(b.Cpu / a.Cpu);
        }
        double median = BenchFacts.Median(ratios);
        bool fast = median <= 1.4;
        pass &= fast;
        Console.WriteLine();
        Console.WriteLine($"step time (median of {rounds} rounds): none {BenchFacts.Median(noneTimes) * 1000:F0} ms, full {BenchFacts.Median(fullTimes) * 1000:F0} ms");
        Console.WriteLine($"{(fast ? "PASS" : "FAIL")}  step time full / none = {median:F3}  (target <= 1.40; rounds " +
                          $"{string.Join(" ", ratios.Select(v => v.ToString("F3", CultureInfo.InvariantCulture)))})");
        // The process's CPU time per step (all threads): the work done, which a loaded machine stretches less than the wall time.
        Console.WriteLine($"info  CPU time per step full / none = {BenchFacts.Median(cpuRatios):F3}  (rounds " +
                          $"{string.Join(" ", cpuRatios.Select(v => v.ToString("F3", CultureInfo.InvariantCulture)))})");
        Console.WriteLine($"load after: {BenchFacts.Load()}");
        x.Dispose();
        y.Dispose();
        return pass ? 0 : 1;
    }

    private static Pipeline Make(GptConfig config, int microBatches, Recomputation recomputation)
    {
        manual_seed(0);
        var model = Gpt.Create(config);
        return new Pipeline(model,
            new PipelineOptions { Ranks = 2, MicroBatches = microBatches, Schedule = "1f1b", ThreadsPerRank = 1, Recomputation = recomputation },
            Gpt.Loss, ps => optim.AdamW(ps, 1e-3));
    }

    // The second of two measurements (the first forwards on fresh worker threads also make those threads' native
    // caches), after a collection, so that no finaliser frees native memory while the heap is read.
    private static IReadOnlyList<StageMemory> Memory(Pipeline pipe, Tensor sample)
    {
        pipe.MeasureMemory(sample);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        return pipe.MeasureMemory(sample);
    }

    // Wall and CPU seconds per step over `steps` training steps.
    private static (double Wall, double Cpu) Time(Pipeline pipe, TextCorpus corpus, GptConfig config, int batch, int steps, int first)
    {
        var process = Process.GetCurrentProcess();
        var cpu = process.TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        for (int k = 0; k < steps; k++)
        {
            using var scope = NewDisposeScope();
            var (x, y) = corpus.Batch(CorpusSplit.Train, first + k, batch, config.ContextLength, 0);
            pipe.TrainStep(x, y);
        }
        double wall = clock.Elapsed.TotalSeconds / steps;
        process.Refresh();
        return (wall, (process.TotalProcessorTime - cpu).TotalSeconds / steps);
    }

    private static string Mb(long bytes) => $"{bytes / 1048576.0:F1} MB";
}

using System.Text;
using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Bench.Speed;

/// <summary>
/// F, B, I and W of every layer of the GPT, as the runtime runs them: one rank holds each layer as its own stage
/// (balance 1,1,...), micro-batches as in the 2-rank pipelines, 1 intra-op thread; once with full backwards (B), once
/// with split ones (all I of a micro-batch, then all its W), from schedule files. Medians over the steps.
/// </summary>
internal static class PerLayer
{
    public static void Print(GptConfig config, Data.TextCorpus corpus, int microBatches, int steps)
    {
        int layers = config.Layers + 2;
        var folder = Directory.CreateTempSubdirectory("pipesharp-bench-");
        try
        {
            var full = Write(folder.FullName, "full", layers, microBatches, split: false);
            var split = Write(folder.FullName, "split", layers, microBatches, split: true);
            var a = Measure(config, corpus, full, layers, microBatches, steps);
            var b = Measure(config, corpus, split, layers, microBatches, steps);
            Console.WriteLine($"per layer, 1 rank, 1 thread, {microBatches} micro-batches of {16 / microBatches} sequences, ms per micro-batch (medians of {steps} steps):");
            Console.WriteLine($"  {"layer",-8} {"F",7} {"B",7} {"I",7} {"W",7} {"(I+W)/B",8}");
            string[] names = ["embed", .. Enumerable.Range(0, config.Layers).Select(i => $"block{i}"), "head"];
            for (int s = 0; s < layers; s++)
            {
                double f = a[(s, ActionKind.Forward)], bb = a[(s, ActionKind.Backward)], i = b[(s, ActionKind.InputGrad)], w = b[(s, ActionKind.WeightGrad)];
                Console.WriteLine($"  {names[s],-8} {f,7:F2} {bb,7:F2} {i,7:F2} {w,7:F2} {(i + w) / bb,8:F3}");
            }
            double sumB = Enumerable.Range(0, layers).Sum(s => a[(s, ActionKind.Backward)]);
            double sumIW = Enumerable.Range(0, layers).Sum(s => b[(s, ActionKind.InputGrad)] + b[(s, ActionKind.WeightGrad)]);
            Console.WriteLine($"  {"all",-8} {Enumerable.Range(0, layers).Sum(s => a[(s, ActionKind.Forward)]),7:F2} {sumB,7:F2} " +
                              $"{Enumerable.Range(0, layers).Sum(s => b[(s, ActionKind.InputGrad)]),7:F2} {Enumerable.Range(0, layers).Sum(s => b[(s, ActionKind.WeightGrad)]),7:F2} {sumIW / sumB,8:F3}");
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    private static string Write(string folder, string name, int layers, int m, bool split)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"name: per-layer-{name}").AppendLine($"stages: {layers}").AppendLine($"microbatches: {m}");
        sb.AppendLine("placement: " + string.Join(' ', Enumerable.Repeat(0, layers)));
        var actions = new List<string>();
        for (int i = 0; i < m; i++)
        {
            for (int s = 0; s < layers; s++) actions.Add($"{s}F{i}");
            if (split)
            {
                for (int s = layers - 1; s >= 0; s--) actions.Add($"{s}I{i}");
                for (int s = layers - 1; s >= 0; s--) actions.Add($"{s}W{i}");
            }
            else
            {
                for (int s = layers - 1; s >= 0; s--) actions.Add($"{s}B{i}");
            }
        }
        sb.AppendLine("rank 0: " + string.Join(' ', actions));
        var path = Path.Combine(folder, name + ".txt");
        File.WriteAllText(path, sb.ToString());
        return path;
    }

    private static Dictionary<(int, ActionKind), double> Measure(GptConfig config, Data.TextCorpus corpus, string schedule, int layers, int m, int steps)
    {
        manual_seed(0);
        using var model = Gpt.Create(config);
        using var pipe = new Pipeline(model, new PipelineOptions { Balance = Enumerable.Repeat(1, layers).ToArray(), MicroBatches = m, Schedule = schedule, ThreadsPerRank = 1 },
            Gpt.Loss, ps => optim.AdamW(ps, 1e-3));
        var durations = new Dictionary<(int, ActionKind), List<double>>();
        for (int k = 0; k < steps + 1; k++)
        {
            var (x, y) = corpus.Batch(Data.CorpusSplit.Train, k, 16, config.ContextLength, 0);
            using (x)
            using (y)
                pipe.TrainStep(x, y);
            if (k == 0) continue; // warm-up
            foreach (var g in pipe.LastStep!.Timeline.GroupBy(t => (t.Action.Stage, t.Action.Kind)))
            {
                if (!durations.TryGetValue(g.Key, out var list)) durations[g.Key] = list = new();
                list.Add(g.Average(t => t.End - t.Start) * 1e3);
            }
        }
        return durations.ToDictionary(kv => kv.Key, kv => kv.Value.Order().ElementAt(kv.Value.Count / 2));
    }
}

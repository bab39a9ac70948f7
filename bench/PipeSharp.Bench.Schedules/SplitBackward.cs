using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Bench.Schedules;

/// <summary>
/// Measures the cost of splitting a backward into I (input gradient) and W (weight gradient) in the real runtime:
/// one stage, the same model and batches, once with full backwards (1F1B) and once split (ZB-H1); the timeline gives
/// each action's duration. Target: I + W at most 1.15 x B.
/// </summary>
internal static class SplitBackward
{
    public static void Run(int rounds, int steps)
    {
        torch.set_num_threads(1);
        Console.WriteLine("Split backward: I + W versus B, one stage, 1 intra-op thread, medians over rounds");
        Console.WriteLine($"{"model",-34} {"F ms",7} {"B ms",7} {"I ms",7} {"W ms",7} {"(I+W)/B",8}");
        bool pass = true;
        pass &= Measure("MLP 4 x 1024, batch 256 (4 x 64)", () => Mlp.Create(1024, 1024, 1024, 4),
            () => randn(256, 1024), () => randn(256, 1024), (o, t) => nn.functional.mse_loss(o, t), rounds, steps);
        var config = new GptConfig(VocabularySize: 64, ContextLength: 128, Layers: 1, Width: 256, Heads: 4);
        pass &= Measure("transformer block, 256 wide, 8 x 128", () => nn.Sequential(("block", new Gpt.Block(config))),
            () => randn(32, 128, 256), () => randn(32, 128, 256), (o, t) => nn.functional.mse_loss(o, t), rounds, steps);
        Console.WriteLine($"I + W <= 1.15 x B on both: {(pass ? "PASS" : "FAIL")}");
    }

    private static bool Measure(string label, Func<TorchSharp.Modules.Sequential> model, Func<Tensor> input, Func<Tensor> target,
        Func<Tensor, Tensor, Tensor> loss, int rounds, int steps)
    {
        manual_seed(0);
        using var x = input();
        using var y = target();
        var medians = new Dictionary<string, List<double>>();
        using var full = new Pipeline(model(), new PipelineOptions { Ranks = 1, MicroBatches = 4, Schedule = "1f1b", ThreadsPerRank = 1 }, loss, ps => optim.SGD(ps, 1e-4));
        using var split = new Pipeline(model(), new PipelineOptions { Ranks = 1, MicroBatches = 4, Schedule = "zb-h1", ThreadsPerRank = 1 }, loss, ps => optim.SGD(ps, 1e-4));
        full.TrainStep(x, y);
        split.TrainStep(x, y);
        for (int r = 0; r < rounds; r++)
        {
            foreach (var (pipe, kinds) in new[] { (full, new[] { ActionKind.Forward, ActionKind.Backward }), (split, new[] { ActionKind.InputGrad, ActionKind.WeightGrad }) })
            {
                var sums = kinds.ToDictionary(k => k, _ => 0.0);
                for (int k = 0; k < steps; k++)
                {
                    pipe.TrainStep(x, y);
                    foreach (var a in pipe.LastStep!.Timeline.Where(a => sums.ContainsKey(a.Action.Kind)))
                        sums[a.Action.Kind] += (a.End - a.Start) * 1000;
                }
                foreach (var (kind, total) in sums)
                {
                    string key = PipelineAction.Letter(kind).ToString();
                    if (!medians.TryGetValue(key, out var list)) medians[key] = list = new List<double>();
                    list.Add(total / (steps * 4));
                }
            }
        }
        double M(string k) => medians[k].Order().ElementAt(medians[k].Count / 2);
        double ratio = (M("I") + M("W")) / M("B");
        Console.WriteLine($"{label,-34} {M("F"),7:F2} {M("B"),7:F2} {M("I"),7:F2} {M("W"),7:F2} {ratio,8:F3}");
        return ratio <= 1.15;
    }
}

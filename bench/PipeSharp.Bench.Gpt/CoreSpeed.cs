using System.Globalization;
using PipeSharp.Data;
using PipeSharp.Models;
using PipeSharp.Training;

namespace PipeSharp.Bench.Speed;

/// <summary>
/// Issue 11's three speed ratios on the character GPT (4 layers, width 192, context 128, batch 16, tiny Shakespeare),
/// measured side by side in alternating rounds: every round measures every variant once, in one order and then in the
/// reverse one, with the two sides of each ratio next to each other, and a ratio is the median over the rounds of the
/// ratio within each round.
/// </summary>
internal static class CoreSpeed
{
    private sealed record Variant(string Key, string Name, Func<int, double> Measure)
    {
        public List<double> Rates { get; } = new();
    }

    public static int Run(string[] args, string corpusPath)
    {
        int rounds = BenchFacts.Arg(args, "--rounds", 5), steps = BenchFacts.Arg(args, "--steps", 8), warmup = BenchFacts.Arg(args, "--warmup", 3);
        var only = BenchFacts.Value(args, "--only")?.Split(',').ToHashSet();
        // What the CLI gives --ranks 1 when --microbatches is not given: 1 since the fix of issue 11 (4 before).
        int oneStageMicroBatches = BenchFacts.Arg(args, "--one-stage-microbatches", 1);
        Console.WriteLine($"PipeSharp core speed (issue 11): {Environment.ProcessorCount} CPUs, {BenchFacts.Cpu()}, .NET {Environment.Version}");
        Console.WriteLine($"load before: {BenchFacts.Load()}");
        var corpus = TextCorpus.Load(corpusPath);
        var task = new CorpusTask(corpus);
        var config = new GptConfig(corpus.Tokenizer.VocabularySize, ContextLength: 128, Layers: 4, Width: 192, Heads: 4, Dropout: 0, TieEmbeddings: true);
        // The CLI's gpt defaults (TrainGptCommand.TrainingOptions), batch 16, no validation inside the timed steps.
        var options = new LanguageModelTrainingOptions
        {
            Steps = 1_000_000, BatchSize = 16, LearningRate = 6e-3, MinLearningRate = 1e-4, WarmupSteps = 40, WeightDecay = 0.1,
            MaxGradNorm = 1.0, EvalEvery = 0, Seed = 0,
        };
        Console.WriteLine($"model: GPT 4 layers, width 192, context 128, 4 heads, vocabulary {config.VocabularySize}; batch 16 ({16 * 128} tokens); " +
                          $"AdamW, clip 1.0; 1 stage: {oneStageMicroBatches} micro-batch(es); {rounds} rounds x {steps} steps after {warmup} warm-up steps");

        if (args.Contains("--step-costs")) StepCosts.Print(config, corpus);
        if (args.Contains("--per-layer")) PerLayer.Print(config, corpus, microBatches: 8, steps: 5);
        using var plain = new PlainGptLoop(config, task, options);
        using var cli1 = new TrainerRun(config, task, options, ranks: 1, oneStageMicroBatches, "1f1b", threadsPerRank: 1);
        using var cli2 = new TrainerRun(config, task, options, ranks: 1, oneStageMicroBatches, "1f1b", threadsPerRank: null);
        using var oneF = new TrainerRun(config, task, options, ranks: 2, microBatches: 8, "1f1b", threadsPerRank: null);
        using var zbv = new TrainerRun(config, task, options, ranks: 2, microBatches: 8, "zb-v", threadsPerRank: null);
        // zb-v ordered as before the trainer measured F, I and W (F = I = W), to show that fix's gain side by side.
        using var zbvEqual = new TrainerRun(config, task, options, ranks: 2, microBatches: 8, "zb-v", threadsPerRank: null, Schedules.ActionCosts.Unit);
        using var zbh1 = new TrainerRun(config, task, options, ranks: 2, microBatches: 8, "zb-h1", threadsPerRank: null);
        using var zbv4 = new TrainerRun(config, task, options, ranks: 2, microBatches: 4, "zb-v", threadsPerRank: null);
        var variants = new List<Variant>
        {
            new("plain1", "plain TorchSharp loop, 1 intra-op thread", n => plain.Measure(n, 1)),
            new("cli1", "CLI path, 1 stage, --threads-per-rank 1", cli1.Measure),
            new("plain2", "plain TorchSharp loop, 2 intra-op threads", n => plain.Measure(n, 2)),
            new("cli2", "CLI path, 1 stage (2 intra-op threads)", cli2.Measure),
            new("1f1b", "CLI path, 2 ranks, 1f1b, 8 micro-batches", oneF.Measure),
            new("zbv", "CLI path, 2 ranks, zb-v, 8 micro-batches", zbv.Measure),
            new("zbv-eq", "  the same, ordered by F = I = W (info)", zbvEqual.Measure),
            new("zbh1", "CLI path, 2 ranks, zb-h1, 8 micro-batches", zbh1.Measure),
            new("zbv4", "CLI path, 2 ranks, zb-v, 4 micro-batches", zbv4.Measure),
        };
        var extra = new List<TrainerRun>();
        foreach (var spec in (BenchFacts.Value(args, "--extra") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            // ranks:microBatches:schedule:threads[:F/B/I/W], e.g. 1:1:1f1b:2 (for investigating; not part of the ratios)
            var f = spec.Split(':');
            var costs = f.Length > 4 ? f[4].Split('/').Select(x => double.Parse(x, CultureInfo.InvariantCulture)).ToArray() : null;
            var run = new TrainerRun(config, task, options, int.Parse(f[0]), int.Parse(f[1]), f[2], f[3] == "-" ? null : int.Parse(f[3]),
                costs is null ? null : new Schedules.ActionCosts(costs[0], costs[1], costs[2], costs[3]));
            extra.Add(run);
            variants.Add(new(spec, $"extra {spec}", run.Measure));
        }
        if (only != null) variants = variants.Where(v => only.Contains(v.Key)).ToList();
        foreach (var v in variants) v.Measure(warmup);
        // Forwards in even rounds, backwards in odd ones: the two sides of every ratio are measured next to each other.
        for (int r = 0; r < rounds; r++)
            for (int k = 0; k < variants.Count; k++)
            {
                var v = variants[r % 2 == 0 ? k : variants.Count - 1 - k];
                v.Rates.Add(v.Measure(steps));
            }

        Console.WriteLine();
        Console.WriteLine($"{"variant",-48} {"tokens/s",9} {"min",7} {"max",7}   per round");
        foreach (var v in variants)
            Console.WriteLine($"{v.Name,-48} {BenchFacts.Median(v.Rates),9:F0} {v.Rates.Min(),7:F0} {v.Rates.Max(),7:F0}   {string.Join(" ", v.Rates.Select(x => x.ToString("F0", CultureInfo.InvariantCulture)))}");
        Console.WriteLine();
        var byKey = variants.ToDictionary(v => v.Key);
        bool pass = true;
        void Ratio(string label, double target, Func<int, double?> perRound)
        {
            var values = Enumerable.Range(0, rounds).Select(perRound).Where(x => x is not null).Select(x => x!.Value).ToList();
            if (values.Count == 0) return;
            double m = BenchFacts.Median(values);
            bool ok = m >= target;
            pass &= ok;
            Console.WriteLine($"{(ok ? "PASS" : "FAIL")}  {label,-62} = {m,6:F3}  (target >= {target:F2}; rounds {values.Min():F3}-{values.Max():F3})");
        }
        double? R(string a, string b, int r, double scale = 1) =>
            byKey.TryGetValue(a, out var x) && byKey.TryGetValue(b, out var y) ? x.Rates[r] / (scale * y.Rates[r]) : null;
        Ratio("(a) 1 stage via the CLI path / plain loop, 1 thread", 0.97, r => R("cli1", "plain1", r));
        Ratio("(a) 1 stage via the CLI path / plain loop, 2 threads", 0.97, r => R("cli2", "plain2", r));
        Ratio("(b) 2 ranks zb-v / 1f1b, 8 micro-batches", 1.05, r => R("zbv", "1f1b", r));
        // (c): the 2-rank configuration with the best median rate, against twice the plain loop's 1-thread rate.
        var best = variants.Where(v => v.Key is "1f1b" or "zbv" or "zbh1" or "zbv4").OrderByDescending(v => BenchFacts.Median(v.Rates)).FirstOrDefault();
        if (best != null)
            Ratio($"(c) best on 2 ranks ({best.Key}) / (2 x plain loop, 1 thread)", 0.85, r => R(best.Key, "plain1", r, 2));
        Console.WriteLine($"info  zb-v ordered by measured costs / by F = I = W = {BenchFacts.Median(Enumerable.Range(0, rounds).Select(r => R("zbv", "zbv-eq", r) ?? double.NaN).ToList()):F3}");
        Console.WriteLine($"info  plain loop 2 threads / 1 thread = {BenchFacts.Median(Enumerable.Range(0, rounds).Select(r => R("plain2", "plain1", r) ?? double.NaN).ToList()):F3}");
        Console.WriteLine($"load after: {BenchFacts.Load()}");
        if (!args.Contains("--no-breakdown"))
        {
            Console.WriteLine();
            Console.WriteLine("where the time goes (the last measurement of each, from Pipeline.LastStep):");
            foreach (var (key, run) in new[] { ("cli2", cli2), ("1f1b", oneF), ("zbv", zbv), ("zbv-eq", zbvEqual), ("zbh1", zbh1), ("zbv4", zbv4) }.Concat(extra.Select(e => ("extra", e))))
                if (only == null || only.Contains(key) || key == "extra") StepBreakdown.Print(key, run.Trainer.Pipeline, run.LastSteps, args.Contains("--timeline"));
        }
        foreach (var e in extra) e.Dispose();
        return pass ? 0 : 1;
    }
}

// GPT training throughput: PipeSharp with 2 stages (1F1B, 1 intra-op thread each) against single-device training of
// the same model with 2 intra-op threads (a plain TorchSharp loop), measured in one run in alternating rounds.
// Usage: dotnet run -c Release --project bench/PipeSharp.Bench.Gpt [-- --rounds 5 --steps 10]
// With --dropout: the cost of keyed dropout (DropoutCost.cs).
// With --core: the speed ratios of issue 11 instead (CoreSpeed.cs), [--rounds 5 --steps 8 --warmup 3 --only plain1,cli1,...].
// With --limit: issue 13's best layout against the 2-core limit (LimitBench.cs), [--rounds 5 --steps 6 --warmup 3 --only KEY,... --layout key=r:d:m:schedule:threads].
// With --recompute: issue 12's activation memory and step time with and without recomputation (RecomputeBench.cs), [--rounds 3 --steps 3].
using PipeSharp.Native;
using System.Diagnostics;
using System.Globalization;
using PipeSharp.Data;
using PipeSharp.Models;
using PipeSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;

if (args.Contains("--recompute")) return PipeSharp.Bench.Speed.RecomputeBench.Run(args, FindCorpus());
if (args.Contains("--dropout")) return PipeSharp.Bench.Speed.DropoutCost.Run(Arg("--rounds", 5), Arg("--steps", 5));
if (args.Contains("--plain-child")) return PipeSharp.Bench.Speed.PinnedPlainLoops.Child(args, FindCorpus());
if (args.Contains("--limit")) return PipeSharp.Bench.Speed.LimitBench.Run(args, FindCorpus());
if (args.Contains("--core")) return PipeSharp.Bench.Speed.CoreSpeed.Run(args, FindCorpus());
int rounds = Arg("--rounds", 5), steps = Arg("--steps", 10);
var text = File.ReadAllText(FindCorpus());
var corpus = TextCorpus.FromText(text);
Console.WriteLine($"GPT throughput, tiny Shakespeare (char, vocabulary {corpus.Tokenizer.VocabularySize}); {rounds} rounds x {steps} steps, medians; load {File.ReadAllText("/proc/loadavg").Trim()}");
Console.WriteLine($"{"configuration",-44} {"variant",-40} {"tokens/s",9} {"min",7} {"max",7}");
foreach (var (name, config, batch, microBatchCounts) in new[]
{
    ("4 layers, width 192, context 128, batch 16", new GptConfig(corpus.Tokenizer.VocabularySize, 128, 4, 192, 4), 16, new[] { 8, 4 }),
    ("4 layers, width 128, context 64, batch 12", new GptConfig(corpus.Tokenizer.VocabularySize, 64, 4, 128, 4), 12, new[] { 6, 4 }),
})
foreach (int microBatches in microBatchCounts)
{
    var single = new List<double>();
    var piped = new List<double>();
    manual_seed(0);
    using var reference = Gpt.Create(config);
    var referenceOptimizer = optim.AdamW(ParameterIdentity.Distinct(reference.parameters()), 1e-3);
    manual_seed(0);
    using var model = Gpt.Create(config);
    using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = microBatches, Schedule = "1f1b", ThreadsPerRank = 1 },
        Gpt.Loss, ps => optim.AdamW(ps, 1e-3));
    long index = 0;
    double Single()
    {
        set_num_threads(2);
        var clock = Stopwatch.StartNew();
        for (int k = 0; k < steps; k++)
        {
            using var scope = NewDisposeScope();
            var (x, y) = corpus.Batch(CorpusSplit.Train, index++, batch, config.ContextLength, 0);
            referenceOptimizer.zero_grad();
            Gpt.Loss(reference.forward(x), y).backward();
            referenceOptimizer.step();
        }
        return steps * batch * config.ContextLength / clock.Elapsed.TotalSeconds;
    }
    double Piped()
    {
        var clock = Stopwatch.StartNew();
        for (int k = 0; k < steps; k++)
        {
            using var scope = NewDisposeScope();
            var (x, y) = corpus.Batch(CorpusSplit.Train, index++, batch, config.ContextLength, 0);
            pipe.TrainStep(x, y);
        }
        return steps * batch * config.ContextLength / clock.Elapsed.TotalSeconds;
    }
    Single(); Piped(); // warm-up
    for (int r = 0; r < rounds; r++)
    {
        if (r % 2 == 0) { single.Add(Single()); piped.Add(Piped()); }
        else { piped.Add(Piped()); single.Add(Single()); }
    }
    Console.WriteLine($"{name,-44} {"single device, 2 intra-op threads",-40} {Median(single),9:F0} {single.Min(),7:F0} {single.Max(),7:F0}");
    Console.WriteLine($"{"",-44} {$"PipeSharp 2 stages, 1f1b, {microBatches} micro-batches",-40} {Median(piped),9:F0} {piped.Min(),7:F0} {piped.Max(),7:F0}");
    Console.WriteLine($"{"",-44} {"ratio PipeSharp / single device",-40} {Median(piped) / Median(single),9:F3}");
}
Console.WriteLine($"load after: {File.ReadAllText("/proc/loadavg").Trim()}");
return 0;

static double Median(List<double> xs) { var s = xs.Order().ToList(); return s[s.Count / 2]; }

int Arg(string name, int fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
}

static string FindCorpus()
{
    // The repository's data/tinyshakespeare.txt, copied beside this program by the build.
    var path = Path.Combine(AppContext.BaseDirectory, "data", "tinyshakespeare.txt");
    return File.Exists(path) ? path : throw new FileNotFoundException("tiny Shakespeare is expected beside the program (data/tinyshakespeare.txt, copied by the build).", path);
}

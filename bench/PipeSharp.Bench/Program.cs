using PipeSharp.Bench;
using PipeSharp.Runtime;
using TorchSharp;

var options = BenchOptions.Parse(args);
if (options is null) return;

PipeSharp.Native.TorchNative.EnsureLoaded();
var log = Console.Out;
log.WriteLine("PipeSharp.Bench: MLP training throughput, plain TorchSharp vs PipeSharp");
log.WriteLine($"  machine: {Machine.Describe()}");
log.WriteLine($"  workload: {Workload.Describe()}");
log.WriteLine($"  run: {options.Rounds} rounds x {options.Steps} timed steps per variant (+1 untimed step before each), " +
              $"{options.WarmupSteps} warm-up steps per variant; medians over rounds");
log.WriteLine("libtorch intra-op threads per OS thread (torch.get_num_threads()):");
ThreadCheck.Run(log);

torch.set_num_threads(1);
using var data = new Workload();
int m = Workload.MicroBatches;
var variants = new List<Variant>
{
    new PlainLoop("a", "plain loop, 1 intra-op thread", data, threads: 1),
    new PlainLoop("b", "plain loop, 2 intra-op threads", data, threads: 2),
    new PipelineVariant("c", "PipeSharp 1 stage, 1 micro-batch, 1 thread", data,
        new PipelineOptions { Ranks = 1, MicroBatches = 1, Schedule = "1f1b", ThreadsPerRank = 1 }),
    new PipelineVariant("d", $"PipeSharp 2 stages (2,2), {m} micro-batches, 1f1b, 1 thread/stage", data,
        new PipelineOptions { Balance = [2, 2], MicroBatches = m, Schedule = "1f1b", ThreadsPerRank = 1 }),
    new IndependentHalves("e", $"ceiling: 2 free threads, one half each, {m}x{Workload.Batch / m} rows, x{m}/{m + 1}", data),
    new PlainLoop("f", $"plain loop, 1 thread, {m} micro-batches of {Workload.Batch / m} (info)", data, threads: 1, microBatches: m),
};
log.WriteLine($"  ceiling (e) threads read {string.Join(", ", variants.OfType<IndependentHalves>().Single().ThreadCounts)}; " +
              "pipelines' last-stage workers read " + string.Join(", ", variants.OfType<PipelineVariant>().Select(p => $"({p.Key}) {p.LastStageThreads}")));
log.WriteLine();
if (options.Only is { } only)
{
    foreach (var v in variants.Where(v => !only.Contains(v.Key))) v.Dispose();
    variants = variants.Where(v => only.Contains(v.Key)).ToList();
    if (variants.Count == 0)
    {
        Console.Error.WriteLine("--only: none of the keys names a variant (a-f).");
        Environment.ExitCode = 2;
        return;
    }
}
Variant? Find(string key) => variants.SingleOrDefault(v => v.Key == key);

try
{
    var results = Harness.Run(variants, options, log);
    log.WriteLine();
    Report.Print(results, options, log);
    log.WriteLine($"loadavg after the rounds: {Machine.LoadAverage()} (the benchmark itself accounts for up to ~2)");
    log.WriteLine();
    if (options.Diagnostics && Find("a") is PlainLoop a && Find("c") is PipelineVariant c)
        Diagnostics.SingleStage(a, c, log);
    if (options.Diagnostics && Find("d") is PipelineVariant d && Find("e") is IndependentHalves e)
        Diagnostics.Run(d, e, data, options, log);
}
finally
{
    foreach (var v in variants) v.Dispose();
}

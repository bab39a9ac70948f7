namespace PipeSharp.Bench;

/// <summary>The table of medians and the ratio lines (ratios of medians).</summary>
internal static class Report
{
    public static void Print(IReadOnlyList<VariantResult> results, BenchOptions options, TextWriter log)
    {
        log.WriteLine($"samples/s over {options.Rounds} rounds ({options.Steps} steps x {Workload.Batch} samples each):");
        log.WriteLine($"  {"variant",-66} {"median",8} {"min",8} {"max",8}  busy threads  last loss");
        foreach (var r in results)
        {
            log.WriteLine($"  ({r.Variant.Key}) {r.Variant.Description,-62} {r.Median,8:F0} {r.Min,8:F0} {r.Max,8:F0}  {BusyThreads(r),-12}  {r.Variant.LastLoss:F4}");
        }
        log.WriteLine("  busy threads: OS threads of this process that used >= 20% of a measurement's wall time (median over rounds);");
        log.WriteLine("  in the last round: " + string.Join("; ", results.Select(r => $"({r.Variant.Key}) " +
            (r.BusyThreads.Count == 0 ? "n/a" : string.Join(", ", r.BusyThreads[^1].Select(b => $"'{b.Name}' {b.CpuSeconds:F2}s"))))));
        log.WriteLine();

        double Med(string key) => results.SingleOrDefault(r => r.Variant.Key == key)?.Median ?? double.NaN;
        log.WriteLine("ratios of medians:");
        if (options.Rounds * options.Steps < 20)
            log.WriteLine("  (a smoke-test sized run: these ratios are noise, not measurements)");
        Target(log, "c/a", Med("c") / Med("a"), 0.97, "PipeSharp 1 stage vs plain loop, 1 thread");
        Target(log, "d/e", Med("d") / Med("e"), 0.90, "PipeSharp 2 stages vs its ceiling");
        Info(log, "d/b", Med("d") / Med("b"), "PipeSharp 2 stages vs plain loop with 2 intra-op threads");
        Info(log, "d/a", Med("d") / Med("a"), "PipeSharp 2 stages vs plain loop, 1 thread");
        Info(log, "b/a", Med("b") / Med("a"), "2 intra-op threads vs 1");
        Info(log, "f/a", Med("f") / Med("a"), "8 micro-batches of 32 vs whole batch, 1 thread (micro-batching cost)");
        Info(log, "e/(2f x 8/9)", Med("e") / (Med("f") * 2 * Workload.MicroBatches / (Workload.MicroBatches + 1.0)),
            "ceiling vs perfect 2x scaling of micro-batched work (< 1: the two threads slow each other)");
        log.WriteLine();
    }

    private static string BusyThreads(VariantResult r)
    {
        if (!ThreadCensus.Available || r.BusyThreads.Count == 0) return "n/a";
        return Stats.Median(r.BusyThreads.Select(b => (double)b.Count)).ToString("0.#");
    }

    // Ratios of variants that were not measured (--only) are left out.
    private static void Target(TextWriter log, string name, double value, double target, string what)
    {
        if (!double.IsNaN(value)) log.WriteLine($"  {(value >= target ? "PASS" : "FAIL")}  {name,-12} = {value,6:F3}  (target >= {target:F2})  {what}");
    }

    private static void Info(TextWriter log, string name, double value, string what)
    {
        if (!double.IsNaN(value)) log.WriteLine($"  info  {name,-12} = {value,6:F3}                    {what}");
    }
}

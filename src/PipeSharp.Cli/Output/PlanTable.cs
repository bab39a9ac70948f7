using PipeSharp.Memory;
using PipeSharp.Planning;

namespace PipeSharp.Cli.Output;

/// <summary>The best plans as a table, and the chosen plan as one line.</summary>
internal static class PlanTable
{
    public static void Write(TextWriter output, IReadOnlyList<PlanCandidate> plans, int top, bool tokens)
    {
        string rate = tokens ? "tokens/s" : "samples/s";
        string[] header = ["#", "ranks", "replicas", "micro-batches", "schedule", "recompute", "threads", "balance", $"predicted {rate}", "step ms", "peak/rank", "bubble"];
        var rows = plans.Take(top).Select((p, i) => new[]
        {
            (i + 1).ToString(), p.Ranks.ToString(), p.Replicas.ToString(), p.MicroBatches.ToString(), p.Schedule, p.Recomputation.ToString(),
            p.ThreadsPerRank.ToString(), string.Join(",", p.Balance), (tokens ? p.TokensPerSecond : p.SamplesPerSecond).ToString("0"),
            (p.PredictedStepSeconds * 1e3).ToString("0.0"), MemorySize.Format(p.LargestRankBytes), p.Bubble.ToString("P0"),
        }).ToList();
        var widths = header.Select((h, c) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[c].Length))).ToArray();
        output.WriteLine(string.Join("  ", header.Select((h, c) => h.PadLeft(widths[c]))));
        foreach (var row in rows) output.WriteLine(string.Join("  ", row.Select((v, c) => v.PadLeft(widths[c]))));
        output.WriteLine($"{plans.Count} layout(s) fit; predicted by the calibrated simulator from cached profiles (docs/planning.md).");
    }

    public static string Chosen(PlanCandidate plan, bool tokens) =>
        $"plan: {plan.Ranks} rank(s) x {plan.Replicas} replica(s), --microbatches {plan.MicroBatches}, --schedule {plan.Schedule}, " +
        $"--recompute {plan.Recomputation}, --threads-per-rank {plan.ThreadsPerRank}, --balance {string.Join(",", plan.Balance)}: predicted " +
        $"{(tokens ? plan.TokensPerSecond : plan.SamplesPerSecond):0} {(tokens ? "tokens" : "samples")}/s, {plan.PredictedStepSeconds * 1e3:0.0} ms per step, " +
        $"peak {MemorySize.Format(plan.LargestRankBytes)} per rank, bubble {plan.Bubble:P0}";
}

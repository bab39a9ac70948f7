using PipeSharp.Partitioning;
using PipeSharp.Schedules;

namespace PipeSharp.Memory;

/// <summary>A change of layout that the memory model predicts to fit, with its largest rank's peak.</summary>
/// <param name="Change">What to change, in the words of the options (e.g. "Ranks = 4", "Schedule = 1f1b").</param>
/// <param name="LargestRankBytes">The predicted peak of the largest rank after the change.</param>
internal sealed record MemoryAlternative(string Change, long LargestRankBytes);

/// <summary>
/// Tries one change at a time (more ranks, another schedule, more and smaller micro-batches, full recomputation),
/// predicts each with <see cref="MemoryModel"/> from the same inputs, and keeps those that fit the budgets.
/// </summary>
/// <remarks>
/// More ranks re-cut the model by parameter count, as the pipeline does without a balance; a new stage's kept
/// bytes are estimated from the measured stages, each layer taking an equal share of its stage's, and its boundary
/// tensors as those of the stage its last layer was in. More micro-batches scale the per-micro-batch bytes down in
/// proportion. Full recomputation keeps a stage's input per micro-batch and makes one micro-batch's activations again
/// during its backward. These are estimates: the chosen layout is measured again when it is built.
/// </remarks>
internal static class MemoryAlternatives
{
    public static IReadOnlyList<MemoryAlternative> Find(MemoryPlan plan, MemoryModelInputs inputs, IReadOnlyList<long> budgets)
    {
        var found = new List<MemoryAlternative>();
        int layers = plan.LayerParameterBytes.Count;

        // More ranks: the fewest that fit (one stage per rank more each time).
        for (int ranks = plan.Ranks + 1; ranks * plan.StagesPerRank <= layers && ranks <= plan.Ranks * 8; ranks++)
        {
            if (Try($"Ranks = {ranks}", plan.ScheduleName, ranks, plan.MicroBatches, plan.StagesPerRank, Recut(plan, inputs, ranks * plan.StagesPerRank)) is { } a)
            {
                found.Add(a);
                break;
            }
        }
        if (plan.ScheduleName is { } current)
        {
            foreach (var name in ScheduleGenerators.Names.Where(n => n != current))
            {
                int perRank = name switch { "interleaved" => 2, "zb-v" => 2, _ => 1 };
                if (plan.Ranks * perRank > layers) continue;
                var stages = perRank == plan.StagesPerRank ? inputs : Recut(plan, inputs, plan.Ranks * perRank);
                if (Try($"Schedule = {name}", name, plan.Ranks, plan.MicroBatches, perRank, stages) is { } a) found.Add(a);
            }
            foreach (int factor in new[] { 2, 4, 8 })
            {
                int m = plan.MicroBatches * factor;
                if (plan.SamplesPerReplica > 0 && m > plan.SamplesPerReplica) break;
                if (Try($"MicroBatches = {m}", current, plan.Ranks, m, plan.StagesPerRank, Scaled(inputs, 1.0 / factor)) is { } a)
                {
                    found.Add(a);
                    break;
                }
            }
            if (Try("full activation recomputation (keep only each stage's input)", current, plan.Ranks, plan.MicroBatches, plan.StagesPerRank,
                    Recomputed(inputs)) is { } r) found.Add(r);
        }
        return found;

        MemoryAlternative? Try(string change, string? name, int ranks, int microBatches, int perRank, MemoryModelInputs candidate)
        {
            if (name is null) return null;
            Schedule schedule;
            try
            {
                schedule = ScheduleGenerators.Create(name, ranks, microBatches, name == "interleaved" ? perRank : null, plan.Costs);
            }
            catch (ArgumentException)
            {
                return null; // the schedule cannot run this layout
            }
            if (schedule.StageCount != candidate.Stages.Count) return null;
            var prediction = MemoryModel.Predict(schedule, candidate);
            for (int r = 0; r < prediction.Ranks.Count; r++)
            {
                long budget = budgets.Count == 1 ? budgets[0] : budgets.Count == ranks ? budgets[r] : budgets.Min();
                if (prediction.Ranks[r].TotalBytes > budget) return null;
            }
            return new MemoryAlternative(change, prediction.LargestRankBytes);
        }
    }

    private static MemoryModelInputs Recut(MemoryPlan plan, MemoryModelInputs inputs, int stageCount)
    {
        // Per layer: an equal share of its stage's kept and recomputed bytes, and that stage's boundary tensors.
        var kept = new List<double>();
        var recomputed = new List<double>();
        var output = new List<long>();
        foreach (var s in inputs.Stages)
        {
            for (int k = 0; k < s.Layers; k++)
            {
                kept.Add((double)s.KeptBytesPerMicroBatch / s.Layers);
                recomputed.Add((double)s.RecomputedBytesPerMicroBatch / s.Layers);
                output.Add(s.OutputBytesPerMicroBatch);
            }
        }
        if (kept.Count != plan.LayerParameterBytes.Count) return inputs with { Stages = [] };
        var balance = Balance.ByCost(plan.LayerParameterBytes.Select(b => (double)b).ToList(), stageCount);
        var stages = new List<StageMemoryInputs>();
        int first = 0;
        long input = inputs.Stages[0].InputBytesPerMicroBatch;
        for (int s = 0; s < balance.Count; s++)
        {
            var range = Enumerable.Range(first, balance[s]).ToList();
            long outBytes = output[range[^1]];
            stages.Add(new StageMemoryInputs(s, balance[s], range.Sum(l => plan.LayerParameterBytes[l]), 0,
                (long)range.Sum(l => kept[l]), input, outBytes, (long)range.Sum(l => recomputed[l]),
                inputs.Stages[0].SplitBackwardBytesPerMicroBatch > 0 ? outBytes * balance[s] : 0));
            input = outBytes;
            first += balance[s];
        }
        return inputs with { Stages = stages };
    }

    private static MemoryModelInputs Scaled(MemoryModelInputs inputs, double factor) => inputs with
    {
        Stages = inputs.Stages.Select(s => s with
        {
            KeptBytesPerMicroBatch = (long)(s.KeptBytesPerMicroBatch * factor),
            InputBytesPerMicroBatch = (long)(s.InputBytesPerMicroBatch * factor),
            OutputBytesPerMicroBatch = (long)(s.OutputBytesPerMicroBatch * factor),
            RecomputedBytesPerMicroBatch = (long)(s.RecomputedBytesPerMicroBatch * factor),
            SplitBackwardBytesPerMicroBatch = (long)(s.SplitBackwardBytesPerMicroBatch * factor),
        }).ToList(),
    };

    private static MemoryModelInputs Recomputed(MemoryModelInputs inputs) => inputs with
    {
        Stages = inputs.Stages.Select(s => s.RecomputedBytesPerMicroBatch > 0 ? s : s with
        {
            KeptBytesPerMicroBatch = s.InputBytesPerMicroBatch,
            RecomputedBytesPerMicroBatch = s.KeptBytesPerMicroBatch,
        }).ToList(),
    };
}

using PipeSharp.Schedules;

namespace PipeSharp.Memory;

/// <summary>
/// Predicts each rank's peak memory from its stages' inputs and the schedule's action lists. Pure: the same inputs
/// give the same prediction, and nothing is measured here.
/// </summary>
/// <remarks>
/// Each rank's action list is walked in order, keeping count of the micro-batches each of its stages holds: a
/// forward adds one (what it keeps for the backward, and across processes its received inputs), a full backward (B)
/// or an input-gradient action (I) releases it, an I leaves what its W needs until that W. Parameter gradients
/// exist from the stage's first B or W of the step (always, if they are kept between steps). The memory is taken
/// at every action's end and while it runs: a forward before its temporaries are freed, a backward with its
/// gradients made and the gradient it received (plus what a recomputed forward makes again); the largest is the
/// rank's peak. Parameters and optimizer
/// state are held throughout.
/// </remarks>
internal static class MemoryModel
{
    public static MemoryPrediction Predict(Schedule schedule, MemoryModelInputs inputs)
    {
        if (inputs.Stages.Count != schedule.StageCount)
            throw new ArgumentException($"the memory model has {inputs.Stages.Count} stages' inputs for a schedule of {schedule.StageCount} stages.", nameof(inputs));
        var ranks = new List<RankMemoryPrediction>();
        for (int r = 0; r < schedule.RankCount; r++) ranks.Add(PredictRank(schedule, inputs, r));
        return new MemoryPrediction(ranks, inputs.OptimizerStateSource);
    }

    private static RankMemoryPrediction PredictRank(Schedule schedule, MemoryModelInputs inputs, int rank)
    {
        var stages = Enumerable.Range(0, schedule.StageCount).Where(s => schedule.StageToRank[s] == rank).ToList();
        var st = inputs.Stages;
        long parameters = stages.Sum(s => st[s].ParameterBytes);
        long optimizer = (long)Math.Round(parameters * inputs.OptimizerStateFactor);
        long Buffer(int s) => inputs.ReceivesIntoOwnBuffers && s > 0 ? st[s].InputBytesPerMicroBatch : 0; // the first stage reads the batch

        var held = new Dictionary<int, int>();
        var waiting = new Dictionary<int, int>();
        var gradients = new HashSet<int>(inputs.GradientsKeptBetweenSteps ? stages : []);
        foreach (int s in stages) held[s] = waiting[s] = 0;

        RankMemoryPrediction? peak = null;
        long steady = 0;
        void Sample(long transient)
        {
            long grads = gradients.Sum(s => st[s].ParameterBytes);
            long activations = stages.Sum(s => held[s] * st[s].KeptBytesPerMicroBatch
                                               + waiting[s] * (st[s].KeptBytesPerMicroBatch + st[s].SplitBackwardBytesPerMicroBatch)) + transient;
            long buffers = stages.Sum(s => (held[s] + waiting[s]) * Buffer(s));
            var point = new RankMemoryPrediction(rank, stages, parameters, grads, optimizer, activations, buffers,
                stages.Sum(s => st[s].SharedCopyBytes), stages.Sum(s => held[s] + waiting[s]));
            if (peak is null || point.TotalBytes > peak.TotalBytes) peak = point;
            steady = Math.Max(steady, point.TotalBytes - transient);
        }

        Sample(0);
        foreach (var a in schedule.RankActions[rank])
        {
            int s = a.Stage;
            switch (a.Kind)
            {
                case ActionKind.Forward:
                    Sample(Math.Max(st[s].ForwardPeakBytesPerMicroBatch, st[s].KeptBytesPerMicroBatch)); // its temporaries not yet freed
                    held[s]++;
                    Sample(0);
                    break;
                case ActionKind.Backward:
                    // While it runs: the gradients made and the gradient it received held while its micro-batch's graph
                    // is freed step by step; the gradient temporaries are taken as half that graph (docs/memory.md).
                    gradients.Add(s);
                    held[s]--;
                    Sample(st[s].RecomputedBytesPerMicroBatch + st[s].OutputBytesPerMicroBatch + st[s].KeptBytesPerMicroBatch * 3 / 2);
                    Sample(0);
                    break;
                case ActionKind.InputGrad:
                    // An I keeps the whole graph (retain_graph) while it makes every intermediate gradient: taken as large
                    // as the graph itself (docs/memory.md).
                    Sample(st[s].RecomputedBytesPerMicroBatch + st[s].OutputBytesPerMicroBatch + st[s].KeptBytesPerMicroBatch);
                    held[s]--;
                    waiting[s]++;
                    Sample(0);
                    break;
                case ActionKind.WeightGrad:
                    gradients.Add(s);
                    Sample(0);
                    waiting[s]--;
                    Sample(0);
                    break;
            }
        }
        return peak! with { HeldBytes = steady };
    }
}

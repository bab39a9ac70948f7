using PipeSharp.Planning;
using PipeSharp.Runtime;
using Xunit.Abstractions;

namespace PipeSharp.Tests.Planning;

/// <summary>
/// The planner's prediction against the runtime's measurement, for its best 3 candidates on a small MLP (6 layers of
/// 512, batch 64, one thread per rank, two processors): each candidate's step time within 10% of its prediction.
/// The machines this runs on are shared, and the same pipeline's steps take from 14 to 36 ms within seconds (the
/// medians of 10 steps of one 1-rank run, measured here). So each candidate runs beside the step its profile measured
/// (the one the planner's speed check re-runs for cached profiles): 12 blocks of 3 steps of the candidate, then 3 of the
/// profiled step (the first step of each block not counted), and the median step is compared with the prediction
/// scaled by the profiled step's median now against its time in the profile: the prediction for the machine's speed
/// beside the measurement. The figures without the speed check and the busiest rank's busy
/// time are printed too. Runs alone (other tests' threads would slow the steps), and only when
/// PIPESHARP_TIMING_TESTS=1 (<see cref="IdleMachineFactAttribute"/>).
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class PlannerAccuracyTests(ITestOutputHelper output)
{
    private const int Batch = 64, WarmUp = 3, Blocks = 12, StepsPerBlock = 3;

    [IdleMachineFact]
    public void The_best_three_candidates_run_within_ten_percent_of_their_predicted_step_time()
    {
        using var folder = new TempFolder();
        var model = PlanningModels.Mlp(6, width: 512);
        var request = new PlanRequest { BatchSize = Batch, Processors = 2, ThreadsPerRank = 1, ProfileRepeats = 5 };
        var cache = new ProfileCache(folder.Path);
        var plans = Planner.Plan(model, PlanningModels.Sample, PlanningModels.Loss, PlanningModels.Adam, request, cache);
        Assert.True(plans.Count >= 3);
        var top = plans.Take(3).ToList();
        output.WriteLine($"hop between ranks: {top[0].ScheduleCosts.Communication * 1e6:0.0} us");
        var samples = top.Select(p => PlanningModels.Sample(Batch / p.Replicas / p.MicroBatches)).ToList();
        var profiles = samples.Select(s => cache.TryRead(ModelProfiler.KeyOf(model, s.Input, threads: 1))
            ?? throw new InvalidOperationException("the planner left no profile in the cache")).ToList();
        var (input, target) = PlanningModels.Sample(Batch);
        try
        {
            var errors = new List<string>();
            for (int c = 0; c < top.Count; c++)
            {
                var (walls, busy, references) = Run(model, top[c], input, target, samples[c], profiles[c]);
                double factor = Median(references) / profiles[c].StepSeconds;
                double measured = Median(walls), predicted = top[c].PredictedStepSeconds * factor;
                double ratio = measured / predicted;
                output.WriteLine($"{top[c]}\n  step predicted {top[c].PredictedStepSeconds * 1e3:0.00} ms at the profile's speed, {predicted * 1e3:0.00} ms at the " +
                                 $"machine's speed beside it (profiled step {Median(references) * 1e3:0.00} ms against {profiles[c].StepSeconds * 1e3:0.00} ms: " +
                                 $"{factor:0.00}), measured {measured * 1e3:0.00} ms: {ratio:0.000}; without the speed check " +
                                 $"{measured / top[c].PredictedStepSeconds:0.000}; busiest rank measured / predicted " +
                                 $"{Median(busy) / (top[c].PredictedRankBusySeconds.Max() * factor):0.000}");
                if (Math.Abs(ratio - 1) > 0.10)
                    errors.Add($"{top[c]}: step predicted {predicted * 1e3:0.00} ms at the machine's speed, measured {measured * 1e3:0.00} ms ({ratio:0.000})");
            }
            Assert.True(errors.Count == 0, string.Join("\n", errors));
        }
        finally
        {
            foreach (var (i, t) in samples)
            {
                i.Dispose();
                t.Dispose();
            }
            input.Dispose();
            target.Dispose();
        }
    }

    // The candidate's pipeline and its profile's step, side by side: blocks of steps of one, then of the other; the first
    // step of a block (back from the other's memory) is not counted. Gives the candidate's walls and busiest rank's busy
    // times, and the profiled step's walls.
    private static (List<double> Walls, List<double> Busy, List<double> References) Run(PipeSharp.Construction.ModelSpec model, PlanCandidate plan,
        TorchSharp.torch.Tensor input, TorchSharp.torch.Tensor target, (TorchSharp.torch.Tensor Input, TorchSharp.torch.Tensor Target) sample, ModelProfile profile)
    {
        using var pipe = new Pipeline(model, plan.ToPipelineOptions(), PlanningModels.Loss, PlanningModels.Adam);
        using var reference = ModelProfiler.OpenProfiledStep(model, sample.Input, sample.Target, PlanningModels.Loss, PlanningModels.Adam, profile);
        var walls = new List<double>();
        var busy = new List<double>();
        var references = new List<double>();
        for (int step = 0; step < WarmUp; step++)
        {
            pipe.TrainStep(input, target);
            reference.Run();
        }
        for (int block = 0; block < Blocks; block++)
        {
            for (int step = 0; step <= StepsPerBlock; step++)
            {
                pipe.TrainStep(input, target);
                if (step == 0) continue;
                walls.Add(pipe.LastStep!.WallSeconds);
                busy.Add(RankBusy(pipe).Max());
            }
            for (int step = 0; step <= StepsPerBlock; step++)
            {
                var stats = reference.Run();
                if (step > 0) references.Add(stats.WallSeconds);
            }
        }
        return (walls, busy, references);
    }

    private static double[] RankBusy(Pipeline pipe) =>
        Enumerable.Range(0, pipe.Schedule.RankCount).Select(r => Enumerable.Range(0, pipe.Schedule.StageCount)
            .Where(s => pipe.Schedule.StageToRank[s] == r).Sum(s => pipe.LastStep!.StageBusySeconds[s])).ToArray();

    private static double Median(List<double> xs)
    {
        var s = xs.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}

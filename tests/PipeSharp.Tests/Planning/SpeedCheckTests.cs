using PipeSharp.Planning;

namespace PipeSharp.Tests.Planning;

/// <summary>
/// A profile read from the cache is checked against the machine's speed now: its step runs again and its times are
/// scaled by how much longer it takes than the cached step time; with the check off nothing of the model runs.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class SpeedCheckTests
{
    private static readonly PlanRequest Request = new() { BatchSize = 16, Processors = 2, ThreadsPerRank = 1, Ranks = 1, Replicas = 1, MicroBatches = 1 };

    [Fact]
    public void Scaling_a_profile_multiplies_its_times_and_keeps_its_bytes()
    {
        var profile = new ModelProfile("k", "cpu", 1, 4, [new LayerCost(1, 2, 3, 4, 5, 6, 7, 8)])
        {
            InputBytes = 9, OptimizerSeconds = 0.5, BeyondActionsSeconds = 0.25, StepSeconds = 10,
        };
        var scaled = profile.ScaledBy(1.5);
        Assert.Equal(new LayerCost(1.5, 3, 4.5, 6, 5, 6, 7, 8), scaled.Layers[0]);
        Assert.Equal((0.75, 0.375, 15.0, 9L), (scaled.OptimizerSeconds, scaled.BeyondActionsSeconds, scaled.StepSeconds, scaled.InputBytes));
        Assert.Throws<ArgumentOutOfRangeException>(() => profile.ScaledBy(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => profile.ScaledBy(double.NaN));
    }

    [Fact]
    public void A_cached_profile_is_scaled_to_the_machine_s_speed_now_and_used_as_it_is_with_the_check_off()
    {
        using var folder = new TempFolder();
        var count = new StrongBox<int>(0);
        var model = PlanningModels.Counting(count);
        var cache = new ProfileCache(folder.Path);
        var measured = Planner.Plan(model, PlanningModels.Sample, PlanningModels.Loss, PlanningModels.Adam, Request, cache)[0];

        // The cached step time made a thousandth of what it was: the check now finds the machine a thousand times slower.
        var (input, target) = PlanningModels.Sample(16);
        string key;
        using (input)
        using (target)
            key = ModelProfiler.KeyOf(model, input, threads: 1);
        var cached = cache.TryRead(key)!;
        Assert.True(cached.StepSeconds > 0 && cached.BeyondActionsSeconds > 0, $"step {cached.StepSeconds}, beyond {cached.BeyondActionsSeconds}");
        cache.Write(key, cached with { StepSeconds = cached.StepSeconds / 1000 });

        var log = new StringWriter();
        int before = count.Value;
        var checkedPlan = Planner.Plan(model, PlanningModels.Sample, PlanningModels.Loss, PlanningModels.Adam, Request, cache, log)[0];
        Assert.True(count.Value > before, "the speed check ran no step");
        Assert.True(checkedPlan.PredictedActionSeconds > 100 * measured.PredictedActionSeconds,
            $"actions predicted {checkedPlan.PredictedActionSeconds} s against {measured.PredictedActionSeconds} s before");
        Assert.Contains("from the cache", log.ToString());

        before = count.Value;
        var unchecked_ = Planner.Plan(model, PlanningModels.Sample, PlanningModels.Loss, PlanningModels.Adam, Request with { SpeedCheckSteps = 0 }, cache)[0];
        Assert.Equal(before, count.Value);
        Assert.Equal(measured.PredictedActionSeconds, unchecked_.PredictedActionSeconds, 12);
    }
}

using PipeSharp.Planning;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Planning;

/// <summary>The search and the step model on profiles written down (no measuring): what is tried, kept and refused.</summary>
public class PlannerSearchTests
{
    // Six layers, the fourth three times as slow; 1 ms forwards, 2 ms backwards; 1 MB of parameters and of activations each.
    private static ModelProfile Profile(int threads, int samples) => new("test", "cpu", threads, samples,
        Enumerable.Range(0, 6).Select(l =>
        {
            double scale = (l == 3 ? 3 : 1) * samples / 8.0 / threads;
            return new LayerCost(1e-3 * scale, 2e-3 * scale, 1e-3 * scale, 1e-3 * scale, 1_000_000L * samples / 8, 4096L * samples, 1_000_000, 2_000_000);
        }).ToList()) { InputBytes = 4096L * samples, OptimizerSeconds = 6e-4 };

    private static IReadOnlyList<PlanCandidate> Search(PlanRequest request) =>
        Planner.Search(request, PlanSpace.Layouts(request, 6), l => Profile(l.Threads, request.BatchSize / l.Replicas / l.MicroBatches),
            new LinkCost(1e-5, 0), _ => RuntimeOverheads.None);

    [Fact]
    public void The_search_covers_ranks_replicas_threads_micro_batches_schedules_and_recomputation_within_the_processors()
    {
        var layouts = PlanSpace.Layouts(new PlanRequest { BatchSize = 32, Processors = 4 }, 6);
        Assert.All(layouts, l => Assert.True(l.Ranks * l.Replicas * l.Threads <= 4));
        Assert.Equal([1, 2, 3, 4], layouts.Select(l => l.Ranks).Distinct().Order());
        Assert.Equal([1, 2, 4], layouts.Select(l => l.Replicas).Distinct().Order()); // 3 does not divide 32
        Assert.Equal([1, 2, 3, 4], layouts.Select(l => l.Threads).Distinct().Order());
        Assert.Equal([1, 2, 4, 8, 16], layouts.Select(l => l.MicroBatches).Distinct().Order());
        Assert.Equal(5, layouts.Where(l => l.Ranks > 1).Select(l => l.Schedule).Distinct().Count());
        Assert.Equal(["1f1b"], layouts.Where(l => l.Ranks == 1).Select(l => l.Schedule).Distinct());
        Assert.Contains(layouts, l => l.FullRecomputation);
        Assert.DoesNotContain(layouts, l => l.Stages > 6); // zb-v with 4 ranks needs 8 layers
    }

    [Fact]
    public void Candidates_are_ranked_by_throughput_and_their_split_follows_the_measured_costs()
    {
        var plans = Search(new PlanRequest { BatchSize = 32, Processors = 2, ThreadsPerRank = 1, Replicas = 1, Recomputation = Recomputation.None });
        Assert.True(plans.Zip(plans.Skip(1)).All(p => p.First.SamplesPerSecond >= p.Second.SamplesPerSecond));
        var two = plans.First(p => p.Ranks == 2 && p.StagesPerRank == 1);
        Assert.Equal([3, 3], two.Balance); // layers 0-2 cost 3 units, 3-5 cost 5: [4,2] would cost 6
        Assert.Equal(32 / two.PredictedStepSeconds, two.SamplesPerSecond, 6);
        // Two ranks beat one: the same work split in two, with a pipeline to fill.
        Assert.True(plans[0].Ranks == 2, plans[0].ToString());
    }

    [Fact]
    public void A_budget_drops_the_candidates_over_it_and_no_candidate_that_fits_names_the_smallest_budget()
    {
        var all = Search(new PlanRequest { BatchSize = 32, Processors = 2 });
        long smallest = all.Min(c => c.LargestRankBytes);
        var fitting = Search(new PlanRequest { BatchSize = 32, Processors = 2, MemoryPerDevice = [smallest + 1] });
        Assert.All(fitting, c => Assert.True(c.LargestRankBytes <= smallest + 1));
        Assert.True(fitting.Count < all.Count);
        var e = Assert.Throws<ArgumentException>(() => Search(new PlanRequest { BatchSize = 32, Processors = 2, MemoryPerDevice = [smallest / 2] }));
        Assert.Contains("--memory-per-device", e.Message);
        Assert.Contains(PipeSharp.Memory.MemorySize.Format(smallest), e.Message);
        Assert.Equal("memoryPerDevice", e.ParamName);
    }

    [Fact]
    public void Recomputation_trades_time_for_memory_in_the_prediction()
    {
        var plans = Search(new PlanRequest { BatchSize = 32, Processors = 2, Ranks = 2, Replicas = 1, ThreadsPerRank = 1, MicroBatches = 4, Schedule = "1f1b" });
        var none = plans.Single(p => p.Recomputation.IsNone);
        var full = plans.Single(p => !p.Recomputation.IsNone);
        Assert.True(full.PredictedStepSeconds > none.PredictedStepSeconds);
        Assert.True(full.LargestRankBytes < none.LargestRankBytes);
    }

    [Fact]
    public void Bad_requests_are_refused_naming_the_setting()
    {
        Assert.Equal("batchSize", Assert.Throws<ArgumentOutOfRangeException>(() => PlanSpace.Layouts(new PlanRequest { BatchSize = 0 }, 6)).ParamName);
        Assert.Equal("devices", Assert.Throws<ArgumentException>(() => PlanSpace.Layouts(new PlanRequest { BatchSize = 8, Devices = ["tpu"] }, 6)).ParamName);
        var ranks = Assert.Throws<ArgumentOutOfRangeException>(() => PlanSpace.Layouts(new PlanRequest { BatchSize = 8, Processors = 2, Ranks = 3 }, 6));
        Assert.Contains("between 1 and 2", ranks.Message);
        Assert.Equal("schedule", Assert.Throws<ArgumentException>(() => PlanSpace.Layouts(new PlanRequest { BatchSize = 8, Schedule = "bogus" }, 6)).ParamName);
        Assert.Equal("memoryPerDevice", Assert.Throws<ArgumentException>(() => PlanSpace.Layouts(new PlanRequest { BatchSize = 8, MemoryPerDevice = [0] }, 6)).ParamName);
        var none = Assert.Throws<ArgumentException>(() => PlanSpace.Layouts(new PlanRequest { BatchSize = 3, Processors = 2, Replicas = 2 }, 6));
        Assert.Contains("replicas must divide the batch", none.Message);
    }

    [Fact]
    public void A_candidate_turns_into_options_a_pipeline_runs()
    {
        var plan = Search(new PlanRequest { BatchSize = 16, Processors = 2, Ranks = 2, Schedule = "zb-v", MicroBatches = 4, Recomputation = Recomputation.Full }).First();
        var options = plan.ToPipelineOptions(new PipelineOptions { MaxGradNorm = 1.0 });
        Assert.Equal(1.0, options.MaxGradNorm);
        Assert.Equal(plan.Balance, options.Balance);
        var model = PlanningModels.Mlp(6);
        using var pipe = new Pipeline(model, options, PlanningModels.Loss, PlanningModels.Adam);
        Assert.Equal("zb-v", pipe.Schedule.Name);
        Assert.Equal(4, pipe.Schedule.StageCount);
        var (input, target) = PlanningModels.Sample(16);
        using var _ = input;
        using var __ = target;
        Assert.True(float.IsFinite(pipe.TrainStep(input, target)));
    }
}

using PipeSharp.Checkpoints;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using PipeSharp.Verification;
using TorchSharp;

namespace PipeSharp.Tests.Boundaries;

/// <summary>
/// Models whose stages pass several tensors train pipelined to the parameters of plain single-device training: a
/// U-Net-like model whose skips go from stage 0 to stages 2 and 3, and a transformer whose stages pass hidden state and
/// a padding mask (without gradient), under every schedule.
/// </summary>
public class BoundaryEquivalenceTests
{
    private const double Tolerance = 1e-5;
    private const int Steps = 4;

    // Every schedule, 2 and 4 ranks (interleaved and zb-v: 2 chunks each), 2 and 4 micro-batches; [2,2,2,2] for 4 pieces
    // puts a skip across stages, null balances by parameter count.
    public static TheoryData<string, int, int, bool> Cases()
    {
        var data = new TheoryData<string, int, int, bool>();
        foreach (var schedule in ScheduleGenerators.Names)
        foreach (int ranks in new[] { 2, 4 })
        foreach (int m in new[] { 2, 4 })
        {
            if (schedule == "interleaved" && m % ranks != 0) continue;
            int pieces = ranks * ScheduleGenerators.StagesPerRank(schedule, null);
            data.Add(schedule, ranks, m, pieces == 4);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void UNet_with_skips_across_stages_matches_single_device(string schedule, int ranks, int microBatches, bool evenSplit)
    {
        var batches = BoundaryModels.UNetBatches(Steps);
        try
        {
            var options = new PipelineOptions
            {
                Ranks = ranks, Balance = evenSplit ? [2, 2, 2, 2] : null, MicroBatches = microBatches, Schedule = schedule, ThreadsPerRank = 1,
            };
            var (diff, _) = EquivalenceCheck.Compare(BoundaryModels.UNet, options, BoundaryModels.Adam, BoundaryModels.CrossEntropy, batches);
            Assert.True(diff <= Tolerance, $"max parameter difference {diff:E2} > {Tolerance:E0}");
        }
        finally
        {
            BoundaryModels.Dispose(batches);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Transformer_passing_hidden_state_and_mask_matches_single_device(string schedule, int ranks, int microBatches, bool evenSplit)
    {
        var batches = BoundaryModels.TransformerBatches(Steps);
        try
        {
            var options = new PipelineOptions
            {
                Ranks = ranks, Balance = evenSplit ? [2, 2, 2, 2] : null, MicroBatches = microBatches, Schedule = schedule, ThreadsPerRank = 1,
                Inputs = Models.MaskedTransformer.Inputs,
            };
            var (diff, _) = EquivalenceCheck.Compare(BoundaryModels.Transformer, options, BoundaryModels.Adam, BoundaryModels.CrossEntropy, batches);
            Assert.True(diff <= Tolerance, $"max parameter difference {diff:E2} > {Tolerance:E0}");
        }
        finally
        {
            BoundaryModels.Dispose(batches);
        }
    }

    [Theory]
    [InlineData("1f1b")]
    [InlineData("zb-v")]
    public void Transformer_with_two_data_parallel_replicas_matches_single_device(string schedule)
    {
        // Each named input (ids and padding) is split between the replicas, then into micro-batches.
        var batches = BoundaryModels.TransformerBatches(Steps);
        try
        {
            var options = new PipelineOptions
            {
                Ranks = 2, MicroBatches = 2, Schedule = schedule, ThreadsPerRank = 1, Replicas = 2, Inputs = Models.MaskedTransformer.Inputs,
            };
            var (diff, _) = EquivalenceCheck.Compare(BoundaryModels.Transformer, options, BoundaryModels.Adam, BoundaryModels.CrossEntropy, batches);
            Assert.True(diff <= Tolerance, $"max parameter difference {diff:E2} > {Tolerance:E0}");
        }
        finally
        {
            BoundaryModels.Dispose(batches);
        }
    }

    [Fact]
    public void The_parameters_move_so_the_comparison_can_fail()
    {
        // Guards the tests above: after the steps, the trained model is far from its initial weights, and one pipeline
        // step on other batches ends far from the reference.
        var batches = BoundaryModels.UNetBatches(Steps);
        try
        {
            using var initial = BoundaryModels.UNet();
            using var trained = BoundaryModels.UNet();
            using var pipe = new Pipeline(trained, new PipelineOptions { Ranks = 2, MicroBatches = 2, ThreadsPerRank = 1 },
                BoundaryModels.CrossEntropy, BoundaryModels.Adam);
            foreach (var (x, y) in batches) pipe.TrainStep(x, y);
            var state = pipe.StateDict();
            double moved = initial.named_parameters().Max(p => (p.parameter - state[p.name]).abs().max().item<float>());
            foreach (var t in state.Values) t.Dispose();
            Assert.True(moved > 1e-3, $"the parameters moved only {moved:E2}");
        }
        finally
        {
            BoundaryModels.Dispose(batches);
        }
    }
}

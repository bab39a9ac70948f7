using PipeSharp.Schedules;

namespace PipeSharp.Tests;

/// <summary>The simulator against the known results of the pipeline papers.</summary>
public class SimulatorTests
{
    [Theory]
    [InlineData("gpipe", 4, 8)]
    [InlineData("1f1b", 4, 8)]
    [InlineData("gpipe", 8, 16)]
    [InlineData("1f1b", 8, 16)]
    [InlineData("1f1b", 5, 3)]
    public void GPipe_and_1F1B_bubble_is_p_minus_1_over_m_plus_p_minus_1(string name, int p, int m)
    {
        var result = ScheduleSimulator.Simulate(ScheduleGenerators.Create(name, p, m), new ActionCosts(Forward: 1, Backward: 2));
        Assert.Equal((m + p - 1) * 3.0, result.Makespan, 9);
        Assert.Equal((p - 1.0) / (m + p - 1), result.BubbleFraction, 9);
    }

    [Fact]
    public void Peak_activations_are_m_for_GPipe_and_p_for_1F1Bs_first_stage()
    {
        var gpipe = ScheduleSimulator.Simulate(ScheduleGenerators.Create("gpipe", 4, 8), ActionCosts.Unit);
        var ofob = ScheduleSimulator.Simulate(ScheduleGenerators.Create("1f1b", 4, 8), ActionCosts.Unit);
        Assert.All(gpipe.PeakActivations, a => Assert.Equal(8, a));
        Assert.Equal([4, 3, 2, 1], ofob.PeakActivations);
    }

    [Theory]
    [InlineData(4, 8, 2)]
    [InlineData(4, 8, 4)]
    [InlineData(8, 16, 2)]
    public void Interleaving_with_v_chunks_divides_the_bubble_by_v(int p, int m, int v)
    {
        var ofob = ScheduleSimulator.Simulate(ScheduleGenerators.Create("1f1b", p, m), new ActionCosts(1, 2));
        // Each chunk is 1/v of a stage's layers, so each action costs 1/v as much.
        var interleaved = ScheduleSimulator.Simulate(ScheduleGenerators.Create("interleaved", p, m, v), new ActionCosts(1.0 / v, 2.0 / v));
        Assert.Equal(ofob.RankIdle.Average() / v, interleaved.RankIdle.Average(), 6);
    }

    [Theory]
    [InlineData(4, 8)]
    [InlineData(8, 16)]
    [InlineData(3, 12)]
    public void ZB_H1_bubble_is_a_third_of_1F1Bs_at_1F1Bs_activation_memory(int p, int m)
    {
        var ofob = ScheduleSimulator.Simulate(ScheduleGenerators.Create("1f1b", p, m), ActionCosts.Unit);
        var zb = ScheduleSimulator.Simulate(ScheduleGenerators.Create("zb-h1", p, m), ActionCosts.Unit);
        Assert.Equal(ofob.RankIdle.Average() / 3, zb.RankIdle.Average(), 6);
        Assert.Equal(ofob.PeakActivations, zb.PeakActivations);
        Assert.All(zb.PeakWeightGradInputs, peak => Assert.True(peak <= 2 * p - 1));
    }

    [Theory]
    [InlineData(4, 8)]
    [InlineData(8, 16)]
    public void ZB_V_is_near_zero_bubble_at_1F1Bs_memory(int p, int m)
    {
        var ofob = ScheduleSimulator.Simulate(ScheduleGenerators.Create("1f1b", p, m), ActionCosts.Unit);
        // Two chunks per rank, each half a stage: actions cost half.
        var zbv = ScheduleSimulator.Simulate(ScheduleGenerators.Create("zb-v", p, m), new ActionCosts(0.5, 1, 0.5, 0.5));
        Assert.True(zbv.RankIdle.Average() <= ofob.RankIdle.Average() / 5, $"idle {zbv.RankIdle.Average()} vs 1F1B {ofob.RankIdle.Average()}");
        Assert.True(zbv.BubbleFraction < 0.07, $"bubble {zbv.BubbleFraction}");
        // In half-stage units, 1F1B's first rank holds p full stages = 2p chunks.
        Assert.All(zbv.PeakWeightGradInputs, peak => Assert.True(peak <= 2 * p));
    }

    [Fact]
    public void Communication_time_delays_cross_rank_dependencies()
    {
        var schedule = ScheduleGenerators.Create("gpipe", 2, 1);
        var result = ScheduleSimulator.Simulate(schedule, new ActionCosts(1, 2, Communication: 0.5));
        // 0F0 [0,1], hop, 1F0 [1.5,2.5], 1B0 [2.5,4.5], hop, 0B0 [5,7]
        Assert.Equal(7, result.Makespan, 9);
    }
}

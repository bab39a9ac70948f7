using PipeSharp.Runtime;
using PipeSharp.Tracing;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Rebalancing;

/// <summary>
/// Automatic rebalancing (<see cref="PipelineOptions.Rebalancing"/>): the trigger (threshold, consecutive steps, minimum
/// gain), the split by measured speed, and in a pipeline a rank made slow by its layers (they sleep in their forward)
/// gets layers moved off it once, logged with its predicted gain, marked in the timelines, the trajectory unchanged.
/// </summary>
[Collection(GlobalRandomCollection.Name)]
public sealed class AutomaticRebalancingTests
{
    private static StepStatistics Step(params double[] stageBusy) => new(stageBusy.Max(), stageBusy, []);

    [Fact]
    public void The_split_gives_a_slower_rank_fewer_layers()
    {
        var costs = Enumerable.Repeat(1.0, 12).ToList();
        Assert.Equal([4, 8], SpeedAwareSplit.RebalancedSplit(costs, [0, 1], [2.0, 1.0]));
        Assert.Equal([6, 6], SpeedAwareSplit.RebalancedSplit(costs, [0, 1], [1.0, 1.0]));
        Assert.Equal([2, 5, 5], SpeedAwareSplit.RebalancedSplit(costs, [0, 1, 2], [2.5, 1.0, 1.0]));
        Assert.Equal([1, 3], SpeedAwareSplit.RebalancedSplit([1, 1, 1, 1], [0, 1], [2.0, 1.0]));
    }

    [Fact]
    public void The_trigger_fires_after_the_given_number_of_slow_steps_in_a_row_and_only_for_a_worthwhile_gain()
    {
        var trigger = new RebalanceTrigger(new RebalancingOptions { Threshold = 0.1, Steps = 3, MinimumGain = 0.05 }, [1, 1, 1, 1]);
        Assert.Null(trigger.AfterStep(Step(5, 1), [2, 2], [0, 1], 2)); // the first step is skipped
        Assert.Null(trigger.AfterStep(Step(2, 1), [2, 2], [0, 1], 2));
        Assert.Null(trigger.AfterStep(Step(2, 1), [2, 2], [0, 1], 2));
        Assert.Null(trigger.AfterStep(Step(1.05, 1), [2, 2], [0, 1], 2)); // within the threshold: the count starts again
        Assert.Null(trigger.AfterStep(Step(2, 1), [2, 2], [0, 1], 2));
        Assert.Null(trigger.AfterStep(Step(2, 1), [2, 2], [0, 1], 2));
        var decision = trigger.AfterStep(Step(2, 1), [2, 2], [0, 1], 2);
        Assert.NotNull(decision);
        Assert.Equal([1, 3], decision.Value.Balance);
        Assert.Equal(0.25, decision.Value.Gain, 1e-12); // slowest rank 2 s -> 1.5 s

        // Back to a split it has left: twice the minimum gain. After 2,2 -> 1,3, rank 0 takes 1 s per layer and rank 1
        // 2.5 s for 3: 2,2 is predicted at max(2, 1.67) = 2 s against 2.5 s, a gain of 20%, enough for a first move
        // (>= 15%) but not to go back (< 30%).
        var back = new RebalanceTrigger(new RebalancingOptions { Threshold = 0.1, Steps = 1, MinimumGain = 0.15 }, [1, 1, 1, 1]);
        back.Moved([2, 2]);
        back.AfterStep(Step(1, 1), [1, 3], [0, 1], 2); // the first step after a move is skipped
        Assert.Null(back.AfterStep(Step(1, 2.5), [1, 3], [0, 1], 2));
        var fresh = new RebalanceTrigger(new RebalancingOptions { Threshold = 0.1, Steps = 1, MinimumGain = 0.15 }, [1, 1, 1, 1]);
        fresh.AfterStep(Step(1, 1), [1, 3], [0, 1], 2);
        var first = fresh.AfterStep(Step(1, 2.5), [1, 3], [0, 1], 2); // the same measurement moves a trigger with no history
        Assert.Equal([2, 2], first!.Value.Balance);
        Assert.Equal(0.2, first.Value.Gain, 1e-12);

        var picky = new RebalanceTrigger(new RebalancingOptions { Threshold = 0.1, Steps = 1, MinimumGain = 0.3 }, [1, 1, 1, 1]);
        picky.AfterStep(Step(1, 1), [2, 2], [0, 1], 2);
        Assert.Null(picky.AfterStep(Step(2, 1), [2, 2], [0, 1], 2)); // 25% < 30%
    }

    // A layer that takes its time: its forward sleeps, so the rank that holds it is slow whatever its cost says.
    private sealed class Sleepy(int milliseconds) : nn.Module<Tensor, Tensor>("sleepy")
    {
        private readonly TorchSharp.Modules.Linear linear = nn.Linear(12, 12);

        public override Tensor forward(Tensor input)
        {
            if (milliseconds > 0) Thread.Sleep(milliseconds);
            return linear.call(input);
        }

        public Sleepy Registered()
        {
            RegisterComponents();
            return this;
        }
    }

    private static Pipeline SleepyPipe(RebalancingOptions? rebalancing)
    {
        manual_seed(3);
        var model = nn.Sequential(("0", new Sleepy(8).Registered()), ("1", new Sleepy(8).Registered()), ("2", new Sleepy(0).Registered()), ("3", new Sleepy(0).Registered()));
        return new Pipeline(model, new PipelineOptions { Balance = [2, 2], MicroBatches = 4, ThreadsPerRank = 1, Rebalancing = rebalancing },
            (o, y) => nn.functional.mse_loss(o, y), ps => optim.AdamW(ps, 1e-2));
    }

    [Fact]
    public void A_slow_rank_gets_layers_moved_off_it_once_logged_and_marked_in_the_timeline_and_training_is_unchanged()
    {
        var batches = RebalanceTests.Batches(8);
        using var still = SleepyPipe(null);
        var expected = RebalanceTests.Train(still, batches);
        using var pipe = SleepyPipe(new RebalancingOptions { Threshold = 0.2, Steps = 3 });
        var withMoves = new List<StepStatistics>();
        var losses = new List<float>();
        foreach (var (x, y) in batches)
        {
            losses.Add(pipe.TrainStep(x, y));
            if (pipe.LastStep!.Moves.Count > 0) withMoves.Add(pipe.LastStep);
        }
        var move = Assert.Single(pipe.Moves);
        Assert.Equal((4L, 0, 1), (move.Step, move.FromRank, move.ToRank)); // step 1 skipped, steps 2-4 slow
        Assert.Equal([1], move.Layers);
        Assert.True(move.PredictedGain > 0.3, $"predicted gain {move.PredictedGain}");
        Assert.Equal([1, 3], pipe.Balance);
        Assert.Equal(move, Assert.Single(Assert.Single(withMoves).Moves));

        var step = withMoves[0];
        string text = TimelineText.Render(step.Timeline, 2, 60, step.Moves);
        Assert.Contains(">> layer 1 to rank 1", text);
        Assert.Contains("<< layer 1 from rank 0", text);
        Assert.Contains($"move {move}", text);
        string svg = TimelineSvg.Render(step.Timeline, 2, "step 4", step.Moves);
        Assert.Contains("class=\"move\"", svg);
        Assert.Contains("rank 0 -&gt; rank 1", svg);
        var trace = new StringWriter();
        ChromeTrace.Write(step.Timeline, trace, step.Messages, step.Moves);
        Assert.Contains("\"cat\": \"rebalancing\"", trace.ToString());

        RebalanceTests.AssertSameRun((losses, pipe.StateDictCopy()), expected);
    }
}

internal static class StateCopies
{
    public static Dictionary<string, Tensor> StateDictCopy(this Pipeline pipe) =>
        Checkpoints.PipelineState.StateDict(pipe).ToDictionary(kv => kv.Key, kv => kv.Value);
}

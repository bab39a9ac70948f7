using PipeSharp.Checkpoints;
using PipeSharp.Models;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Rebalancing;

/// <summary>
/// Moves of layers between ranks between two training steps (<see cref="Pipeline.Rebalance"/>), in one process: with
/// forced moves every two steps the losses and the final parameters are those of an unmoved run (AdamW, SGD with
/// momentum and a learning-rate scheduler, 2 and 3 ranks, a tied embedding, replicas), a moved-away layer is no longer
/// held by its old rank, and moves that cannot be made are refused before anything changes.
/// </summary>
[Collection(GlobalRandomCollection.Name)]
public sealed class RebalanceTests
{
    internal static TorchSharp.Modules.Sequential Mlp(int layers, long seed = 7)
    {
        manual_seed(seed);
        return nn.Sequential(Enumerable.Range(0, layers)
            .Select(i => ($"{i}", (nn.Module<Tensor, Tensor>)nn.Sequential(nn.Linear(12, 12), nn.Tanh()))).ToArray());
    }

    internal static List<(Tensor, Tensor)> Batches(int count, int seed = 11)
    {
        var gen = new Generator((ulong)seed);
        return Enumerable.Range(0, count).Select(_ => (randn([16, 12], generator: gen), randn([16, 12], generator: gen))).ToList();
    }

    private static readonly Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> AdamW = ps => optim.AdamW(ps, 1e-2);
    private static readonly Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> Momentum = ps => optim.SGD(ps, 0.05, momentum: 0.9);

    /// <summary>Trains on every batch, moving to <paramref name="moves"/>[k] after step k; the losses and the final state.</summary>
    internal static (List<float> Losses, Dictionary<string, Tensor> State) Train(Pipeline pipe, List<(Tensor, Tensor)> batches, Dictionary<int, int[]>? moves = null)
    {
        var losses = new List<float>();
        for (int k = 0; k < batches.Count; k++)
        {
            losses.Add(pipe.TrainStep(batches[k].Item1, batches[k].Item2));
            if (moves?.GetValueOrDefault(k + 1) is { } balance) pipe.Rebalance(balance);
        }
        return (losses, pipe.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value));
    }

    internal static void AssertSameRun((List<float> Losses, Dictionary<string, Tensor> State) moved, (List<float> Losses, Dictionary<string, Tensor> State) still)
    {
        for (int k = 0; k < still.Losses.Count; k++)
            Assert.True(Math.Abs(moved.Losses[k] - still.Losses[k]) <= 1e-6, $"step {k + 1}: loss {moved.Losses[k]} moved, {still.Losses[k]} unmoved");
        Assert.Equal(still.State.Keys.Order(), moved.State.Keys.Order());
        double max = still.State.Max(kv => (kv.Value - moved.State[kv.Key]).abs().max().item<float>());
        Assert.True(max <= 1e-6, $"largest parameter difference {max:E2}");
        foreach (var t in moved.State.Values.Concat(still.State.Values)) t.Dispose();
    }

    private static Pipeline MlpPipe(int[] balance, Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer, string schedule = "1f1b") =>
        new(Mlp(balance.Sum()), new PipelineOptions { Balance = balance, MicroBatches = 4, Schedule = schedule, ThreadsPerRank = 1 },
            (o, y) => nn.functional.mse_loss(o, y), optimizer, opt => optim.lr_scheduler.StepLR(opt, 3, 0.5));

    public static TheoryData<string, int[], string> Runs => new()
    {
        { "adamw", [2, 2], "2,2 -> 3,1 -> 1,3 -> 2,2" },
        { "momentum", [2, 2], "2,2 -> 3,1 -> 1,3 -> 2,2" },
        { "adamw", [2, 2, 2], "2,2,2 -> 1,3,2 -> 3,1,2 -> 1,1,4" },
        { "momentum", [2, 2, 2], "2,2,2 -> 1,3,2 -> 3,1,2 -> 1,1,4" },
    };

    [Theory]
    [MemberData(nameof(Runs))]
    public void Forced_moves_every_two_steps_train_exactly_as_an_unmoved_run(string optimizer, int[] balance, string path)
    {
        var opt = optimizer == "adamw" ? AdamW : Momentum;
        var moves = path.Split(" -> ").Skip(1).Select((b, k) => (Step: 2 * (k + 1), Balance: b.Split(',').Select(int.Parse).ToArray()))
            .ToDictionary(m => m.Step, m => m.Balance);
        var batches = Batches(8);
        using var still = MlpPipe(balance, opt);
        var expected = Train(still, batches);
        using var moving = MlpPipe(balance, opt);
        var actual = Train(moving, batches, moves);
        Assert.Equal(moves[6], moving.Balance);
        Assert.Equal(moves.Count, moving.Moves.Select(m => m.Step).Distinct().Count());
        AssertSameRun(actual, expected);
    }

    [Fact]
    public void A_gpt_with_a_tied_embedding_moves_blocks_and_keeps_its_copies_identical()
    {
        var batches = ConstructionTests.TokenBatches(8);
        Pipeline Pipe() => new(Gpt.Spec(ConstructionTests.Tiny, 5), new PipelineOptions { Balance = [3, 3], MicroBatches = 4, ThreadsPerRank = 1 },
            Gpt.Loss, ps => optim.AdamW(ps, 3e-3));
        using var still = Pipe();
        var expected = Train(still, batches);
        using var moving = Pipe();
        var actual = Train(moving, batches, new() { [2] = [4, 2], [4] = [1, 5], [6] = [2, 4] });
        Assert.Equal(0, moving.SharedParameterDrift());
        Assert.Single(moving.SharedParameterNames);
        AssertSameRun(actual, expected);
    }

    [Fact]
    public void Replicas_all_move_the_same_way()
    {
        var batches = Batches(6);
        int seed = 0;
        Pipeline Pipe() => new(() => Mlp(4, 7 + 0 * seed++), new PipelineOptions { Balance = [2, 2], Replicas = 2, MicroBatches = 2, ThreadsPerRank = 1 },
            (o, y) => nn.functional.mse_loss(o, y), AdamW);
        using var still = Pipe();
        var expected = Train(still, batches);
        using var moving = Pipe();
        var actual = Train(moving, batches, new() { [2] = [3, 1], [4] = [1, 3] });
        foreach (var replica in moving.Replicas)
            Assert.Equal([1, 3], replica.Local.Select(s => s.Module.LayerCount));
        AssertSameRun(actual, expected);
    }

    [Fact]
    public void A_moved_away_layer_is_no_longer_held_by_its_old_rank_and_the_move_is_logged()
    {
        var batches = Batches(2);
        using var pipe = MlpPipe([2, 2], AdamW);
        pipe.TrainStep(batches[0].Item1, batches[0].Item2);
        var layer1 = pipe.Stages[0].named_parameters().Where(p => p.name.StartsWith("1.")).Select(p => p.parameter.Handle).ToHashSet();
        var moves = pipe.Rebalance([1, 3]);
        var move = Assert.Single(moves);
        Assert.Equal((1L, 0, 1, 1), (move.Step, move.FromRank, move.ToRank, move.Layers.Single()));
        Assert.Null(move.PredictedGain);
        Assert.Equal(moves, pipe.Moves);
        Assert.Equal("after step 1: layer 1 rank 0 -> rank 1 (asked for)", move.ToString());
        var rank0 = pipe.Replicas[0].StagesOf(0).Single();
        Assert.DoesNotContain(rank0.Module.named_parameters(), p => p.name.StartsWith("1."));
        Assert.DoesNotContain(rank0.Optimizer.parameters(), p => layer1.Contains(p.Handle));
        var rank1 = pipe.Replicas[0].StagesOf(1).Single();
        Assert.Equal(["1", "2", "3"], rank1.Module.named_children().Select(c => c.name));
        Assert.Contains(rank1.Optimizer.parameters(), p => layer1.Contains(p.Handle));
        pipe.TrainStep(batches[1].Item1, batches[1].Item2);
    }

    [Fact]
    public void A_move_inside_the_callers_dispose_scope_keeps_its_tensors_after_the_scope_ends()
    {
        var batches = Batches(4);
        using var still = MlpPipe([2, 2], AdamW);
        var expected = Train(still, batches);
        using var moving = MlpPipe([2, 2], AdamW);
        var losses = new List<float>();
        using (NewDisposeScope())
        {
            losses.Add(moving.TrainStep(batches[0].Item1, batches[0].Item2));
            moving.Rebalance([3, 1]);
        }
        GC.Collect();
        foreach (var (x, y) in batches.Skip(1)) losses.Add(moving.TrainStep(x, y));
        AssertSameRun((losses, moving.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value)), expected);
    }

    [Fact]
    public void Moves_that_cannot_be_made_are_refused_before_anything_changes()
    {
        using var pipe = MlpPipe([2, 2], AdamW);
        var wrongCount = Assert.Throws<ArgumentException>(() => pipe.Rebalance([1, 1, 2]));
        Assert.Contains("2 stages", wrongCount.Message);
        Assert.Throws<ArgumentException>(() => pipe.Rebalance([4, 0]));
        Assert.Empty(pipe.Rebalance([2, 2]));
        using var gpt = new Pipeline(Gpt.Spec(ConstructionTests.Tiny, 5), new PipelineOptions { Balance = [2, 2, 2], MicroBatches = 2, ThreadsPerRank = 1 },
            Gpt.Loss, ps => optim.AdamW(ps, 3e-3));
        Assert.Empty(gpt.Moves);
        Assert.Equal([2, 2, 2], gpt.Balance);
        Assert.Throws<ArgumentOutOfRangeException>(() => new Pipeline(Mlp(4), new PipelineOptions { Ranks = 2, Rebalancing = new RebalancingOptions { Steps = 0 } },
            (o, y) => nn.functional.mse_loss(o, y), AdamW));
    }
}

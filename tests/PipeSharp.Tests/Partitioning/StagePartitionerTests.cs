using PipeSharp.Partitioning;

namespace PipeSharp.Tests.Partitioning;

/// <summary>
/// <see cref="StagePartitioner"/> finds the best split exactly: on many random small problems (fixed seeds) with
/// device speeds, budgets, message costs and placements of one and of several stages per rank, its bottleneck equals
/// the best of every split tried, its prediction equals the cost model written out, and when nothing fits it says so
/// with budgets that do fit.
/// </summary>
public class StagePartitionerTests
{
    private static int[] Placement(Random random, int stages)
    {
        switch (random.Next(5))
        {
            case 0: return Enumerable.Range(0, stages).ToArray();                          // one stage per rank
            case 1 when stages % 2 == 0:
                return Enumerable.Range(0, stages).Select(s => s % (stages / 2)).ToArray(); // interleaved, 2 per rank
            case 2 when stages % 2 == 0:
                int p = stages / 2;
                return Enumerable.Range(0, stages).Select(s => s < p ? s : 2 * p - 1 - s).ToArray(); // V (zb-v)
            default:
                // Any placement that gives each of its ranks a stage.
                int ranks = random.Next(1, stages + 1);
                var placement = Enumerable.Range(0, stages).Select(s => s < ranks ? s : random.Next(ranks)).ToArray();
                random.Shuffle(placement);
                return placement;
        }
    }

    private static PartitionProblem RandomProblem(Random random, bool budgets)
    {
        int layers = random.Next(1, 10);
        int stages = random.Next(1, Math.Min(layers, 6) + 1);
        var placement = Placement(random, stages);
        int ranks = placement.Max() + 1;
        var latency = new double[ranks, ranks];
        var perByte = new double[ranks, ranks];
        for (int a = 0; a < ranks; a++)
        for (int b = 0; b < ranks; b++)
        {
            latency[a, b] = random.NextDouble() * 0.2;
            perByte[a, b] = random.NextDouble() * 1e-3;
        }
        var state = Enumerable.Range(0, layers).Select(_ => (long)random.Next(0, 1000)).ToArray();
        var activations = Enumerable.Range(0, layers).Select(_ => (long)random.Next(0, 300)).ToArray();
        var peaks = Enumerable.Range(0, stages).Select(_ => random.Next(0, 4)).ToArray();
        long total = state.Sum() + activations.Sum() * 3;
        return new PartitionProblem
        {
            // Whole numbers half the time, so that ties are common and must still be resolved exactly.
            LayerSeconds = Enumerable.Range(0, layers).Select(_ => random.Next(2) == 0 ? random.Next(0, 4) : random.NextDouble()).ToArray(),
            StageToRank = placement,
            DeviceSpeeds = random.Next(3) == 0 ? null : Enumerable.Range(0, ranks).Select(_ => 0.25 + random.NextDouble() * 1.75).ToArray(),
            LayerStateBytes = state,
            LayerActivationBytes = activations,
            LayerOutputBytes = Enumerable.Range(0, layers).Select(_ => (long)random.Next(0, 500)).ToArray(),
            StagePeakMicroBatches = peaks,
            TransferSeconds = random.Next(3) == 0 ? null : (from, to, bytes) => latency[from, to] + perByte[from, to] * bytes,
            MemoryPerDevice = !budgets ? null : random.Next(2) == 0
                ? [1 + (long)(random.NextDouble() * total / ranks * 1.5)]
                : Enumerable.Range(0, ranks).Select(_ => 1 + (long)(random.NextDouble() * total / ranks * 1.5)).ToArray(),
        };
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(2, true)]
    [InlineData(3, true)]
    public void The_split_is_the_best_of_every_split_on_random_problems(int seed, bool budgets)
    {
        var random = new Random(seed);
        int solved = 0, refused = 0, several = 0;
        for (int k = 0; k < 400; k++)
        {
            var problem = RandomProblem(random, budgets);
            double? best = BruteForceSplit.Best(problem);
            if (problem.StageToRank.Distinct().Count() < problem.StageToRank.Count) several++;
            if (best is null)
            {
                var e = Assert.Throws<PartitionDoesNotFitException>(() => StagePartitioner.Solve(problem));
                AssertFittingBudgets(problem, e, $"problem {k}");
                refused++;
                continue;
            }
            var partition = StagePartitioner.Solve(problem);
            var (seconds, bytes) = BruteForceSplit.Evaluate(problem, partition.Balance);
            Assert.True(Math.Abs(partition.BottleneckSeconds - best.Value) <= 1e-9 * Math.Max(1, best.Value),
                $"problem {k}: {partition} but the best split has a bottleneck of {best}");
            for (int r = 0; r < seconds.Length; r++)
            {
                Assert.Equal(seconds[r], partition.RankSeconds[r], 9);
                Assert.Equal(bytes[r], partition.RankBytes[r]);
                Assert.True(bytes[r] <= BruteForceSplit.Budget(problem, r), $"problem {k}: rank {r} over its budget in {partition}");
            }
            // Among the splits within 10% of the best, the one best balanced by another cost.
            var preference = problem.LayerSeconds.Select(_ => (double)random.Next(0, 5)).ToArray();
            var near = StagePartitioner.SolveWithin(problem, 0.1, preference);
            Assert.True(near.BottleneckSeconds <= best.Value * 1.1 + 1e-9, $"problem {k}: {near} is not within 10% of {best}");
            Assert.Equal(BruteForceSplit.BestWithin(problem, best.Value * 1.1, preference), RankMax(problem, near.Balance, preference), 9);
            solved++;
        }
        Assert.True(solved > 100, $"{solved} solved");
        Assert.True(several > 100, $"{several} with several stages on a rank");
        if (budgets) Assert.True(refused > 20, $"{refused} refused");
    }

    private static double RankMax(PartitionProblem problem, IReadOnlyList<int> balance, double[] preference)
    {
        var totals = new double[problem.RankCount];
        int first = 0;
        for (int s = 0; s < balance.Count; first += balance[s], s++) totals[problem.StageToRank[s]] += preference.Skip(first).Take(balance[s]).Sum();
        return totals.Max();
    }

    private static void AssertFittingBudgets(PartitionProblem problem, PartitionDoesNotFitException e, string what)
    {
        double share = BruteForceSplit.LeastBudgetShare(problem);
        Assert.True(share > 1, what);
        Assert.Equal("memoryPerDevice", e.ParamName);
        Assert.Contains($"rank {e.Rank}", e.Message);
        Assert.True(e.NeededBytes > e.AllowedBytes, e.Message);
        // The budgets it names fit, and are the least that do in their proportions (within a byte per budget of rounding).
        var fits = StagePartitioner.Solve(problem with { MemoryPerDevice = e.FittingBudgets });
        Assert.Equal(problem.MemoryPerDevice!.Count, e.FittingBudgets.Count);
        for (int i = 0; i < e.FittingBudgets.Count; i++)
            Assert.InRange(e.FittingBudgets[i], problem.MemoryPerDevice[i] * share - 1e-6, problem.MemoryPerDevice[i] * share + 1 + 1e-6);
        Assert.NotNull(fits);
    }

    [Fact]
    public void A_rank_half_as_fast_gets_half_the_work()
    {
        var problem = new PartitionProblem { LayerSeconds = Enumerable.Repeat(1.0, 12).ToArray(), StageToRank = [0, 1], DeviceSpeeds = [1, 0.5] };
        var partition = StagePartitioner.Solve(problem);
        Assert.Equal([8, 4], partition.Balance);
        Assert.Equal([8.0, 8.0], partition.RankSeconds);
        Assert.Equal(12.0, StagePartitioner.Evaluate(problem, [6, 6]).BottleneckSeconds); // the even split: the slow rank takes 12
    }

    [Fact]
    public void Several_stages_on_a_rank_are_balanced_by_the_ranks_totals()
    {
        // Interleaved on 2 ranks: stages 0 and 2 on rank 0, 1 and 3 on rank 1. Stage by stage, 1,2,2,1 is as good as any
        // (largest stage 3, the first layer alone), but rank 0 then holds 3 + 2 = 5. By rank totals: 4 and 4.
        double[] seconds = [3, 1, 1, 1, 1, 1];
        var problem = new PartitionProblem { LayerSeconds = seconds, StageToRank = [0, 1, 0, 1] };
        var partition = StagePartitioner.Solve(problem);
        Assert.Equal([4.0, 4.0], partition.RankSeconds);
        Assert.Equal(5.0, StagePartitioner.Evaluate(problem, [1, 2, 2, 1]).BottleneckSeconds);
    }

    [Fact]
    public void A_message_costs_both_ranks_of_a_cut_and_nothing_on_one_rank()
    {
        var problem = new PartitionProblem
        {
            LayerSeconds = [1, 1, 1, 1],
            LayerOutputBytes = [10, 1000, 10, 10],
            StageToRank = [0, 1],
            TransferSeconds = (_, _, bytes) => bytes * 2e-3,
        };
        // The cut after layer 1 (1000 bytes, 2 s each way) costs more than the imbalance of cutting after layer 0 or 2.
        var partition = StagePartitioner.Solve(problem);
        Assert.Equal([1, 3], partition.Balance);
        Assert.Equal([1.02, 3.02], partition.RankSeconds.Select(t => Math.Round(t, 9)));
        Assert.Equal([4.0, 4.0], StagePartitioner.Evaluate(problem, [2, 2]).RankSeconds);
        Assert.Equal(4.0, StagePartitioner.Solve(problem with { StageToRank = [0, 0] }).BottleneckSeconds, 9); // one rank: 4 s, no message
    }

    [Fact]
    public void Nothing_fits_names_the_rank_the_bytes_and_the_budget_that_would()
    {
        var problem = new PartitionProblem
        {
            LayerSeconds = [1, 1, 1, 1],
            StageToRank = [0, 1],
            LayerStateBytes = [3_000_000, 1_000_000, 1_000_000, 1_000_000],
            MemoryPerDevice = [2_500_000],
        };
        var e = Assert.Throws<PartitionDoesNotFitException>(() => StagePartitioner.Solve(problem));
        Assert.Equal(0, e.Rank);
        Assert.Equal(3_000_000, e.NeededBytes);
        Assert.Equal([3_000_000L], e.FittingBudgets);
        Assert.Equal([1, 3], e.ClosestBalance);
        Assert.Contains("rank 0", e.Message);
        Assert.Contains("3,000,000 bytes", e.Message);
        Assert.Contains("--memory-per-device 3.0MB", e.Message);
        Assert.Equal([1, 3], StagePartitioner.Solve(problem with { MemoryPerDevice = e.FittingBudgets }).Balance);
    }

    [Theory]
    [InlineData("speeds", "DeviceSpeeds has 1 entries for 2 ranks")]
    [InlineData("zero", "DeviceSpeeds[1] is 0")]
    [InlineData("nan", "DeviceSpeeds[0] is NaN")]
    [InlineData("budgets", "MemoryPerDevice has 3 entries for 2 ranks")]
    [InlineData("idle", "gives rank 1 no stage")]
    [InlineData("stages", "3 stages but the model has only 2 layers")]
    public void Bad_problems_are_refused_naming_the_property_and_the_fix(string what, string message)
    {
        var good = new PartitionProblem { LayerSeconds = [1, 1], StageToRank = [0, 1] };
        var bad = what switch
        {
            "speeds" => good with { DeviceSpeeds = [1] },
            "zero" => good with { DeviceSpeeds = [1, 0] },
            "nan" => good with { DeviceSpeeds = [double.NaN, 1] },
            "budgets" => good with { MemoryPerDevice = [1, 2, 3] },
            "idle" => good with { StageToRank = [0, 2] },
            _ => good with { StageToRank = [0, 1, 2] },
        };
        var e = Assert.ThrowsAny<ArgumentException>(() => StagePartitioner.Solve(bad));
        Assert.Contains(message, e.Message);
    }
}

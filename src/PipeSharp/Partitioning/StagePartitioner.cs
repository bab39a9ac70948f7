namespace PipeSharp.Partitioning;

/// <summary>
/// Splits a model into consecutive stages so that the slowest rank is as fast as possible, exactly (dynamic
/// programming), with a speed and a memory budget per rank, several stages per rank, and the cost of the messages
/// between ranks (<see cref="PartitionProblem"/>; the cost model is in docs/partitioning.md). O(stages x layers^2) with
/// one stage per rank; with several stages per rank it keeps, per cut, every state that no other dominates.
/// </summary>
public static class StagePartitioner
{
    /// <summary>The split with the smallest bottleneck (the most seconds per micro-batch of any rank) that fits the budgets.</summary>
    /// <param name="problem">The layers, placement, speeds, budgets and messages.</param>
    /// <exception cref="ArgumentException">The problem is not valid (<see cref="PartitionProblem.Check"/>).</exception>
    /// <exception cref="PartitionDoesNotFitException">No split fits the budgets: the message names the rank, its bytes and budgets that fit.</exception>
    public static Partition Solve(PartitionProblem problem)
    {
        ArgumentNullException.ThrowIfNull(problem);
        problem.Check();
        var model = new CostModel(problem);
        var speeds = Speeds(problem);
        var found = Bounded(problem, UpperBound(problem, model, model.StageSeconds), problem.LayerSeconds, speeds,
            bound => MinMaxSplit.Solve(model.Layers, problem.StageToRank, model.StageSeconds, model.MemoryLimits(), bound, (problem.LayerSeconds, speeds)));
        if (found is null) throw DoesNotFit(problem, model);
        return model.Evaluate(found.Value.Balance);
    }

    /// <summary>
    /// Among the splits that fit the budgets and whose bottleneck is at most (1 + <paramref name="tolerance"/>) times the
    /// best (<see cref="Solve"/>'s), the one whose largest rank total of <paramref name="preference"/> is smallest, e.g.
    /// parameter counts: measured times are noisy, and this keeps the split that a steadier cost gives whenever the
    /// measurements cannot tell the splits apart. Exact as <see cref="Solve"/>.
    /// </summary>
    /// <param name="problem">The layers, placement, speeds, budgets and messages.</param>
    /// <param name="tolerance">How much slower than the best a split may be predicted, as a share (0.05: 5%).</param>
    /// <param name="preference">A cost per layer (at least 0) to balance over the ranks among those splits.</param>
    /// <exception cref="PartitionDoesNotFitException">No split fits the budgets.</exception>
    public static Partition SolveWithin(PartitionProblem problem, double tolerance, IReadOnlyList<double> preference)
    {
        ArgumentNullException.ThrowIfNull(preference);
        if (!(tolerance >= 0) || double.IsInfinity(tolerance))
            throw new ArgumentOutOfRangeException(nameof(tolerance), tolerance, "tolerance must be a finite share of at least 0, e.g. 0.05 for 5%.");
        var best = Solve(problem);
        if (preference.Count != problem.LayerSeconds.Count || preference.Any(p => !(p >= 0) || double.IsInfinity(p)))
            throw new ArgumentException($"preference has {preference.Count} entries: give a finite cost of at least 0 for each of the {problem.LayerSeconds.Count} layers.", nameof(preference));
        var model = new CostModel(problem);
        double bound = best.BottleneckSeconds * (1 + tolerance) * (1 + 1e-12) + 1e-300;
        var prefix = new double[preference.Count + 1];
        for (int i = 0; i < preference.Count; i++) prefix[i + 1] = prefix[i] + preference[i];
        var seconds = new MinMaxSplit.Limit(model.StageSeconds, Enumerable.Repeat(bound, problem.RankCount).ToArray());
        double byBest = RankTotals(problem, best.Balance, (_, i, j) => prefix[j] - prefix[i]).Max(); // best is within the tolerance
        var ones = Enumerable.Repeat(1.0, problem.RankCount).ToArray();
        var found = Bounded(problem, byBest, preference, ones, bound =>
            MinMaxSplit.Solve(model.Layers, problem.StageToRank, (_, i, j) => prefix[j] - prefix[i], [.. model.MemoryLimits(), seconds], bound, (preference, ones)));
        return found is null ? best : model.Evaluate(found.Value.Balance);
    }

    /// <summary>What the cost model predicts for a given split (e.g. one by parameter count, to compare with <see cref="Solve"/>'s).</summary>
    /// <param name="problem">The layers, placement, speeds, budgets and messages.</param>
    /// <param name="balance">Layers per stage: one count per stage, adding up to the layer count.</param>
    public static Partition Evaluate(PartitionProblem problem, IReadOnlyList<int> balance)
    {
        ArgumentNullException.ThrowIfNull(problem);
        problem.Check();
        Balance.Check(balance, problem.LayerSeconds.Count);
        if (balance.Count != problem.StageCount)
            throw new ArgumentException($"balance has {balance.Count} entries for {problem.StageCount} stages: give one count per stage.", nameof(balance));
        return new CostModel(problem).Evaluate(balance);
    }

    // A split that fits, found stage by stage (each stage given its rank's share: its cost times the rank's stage count,
    // within the rank's budget over that count, so that the rank's totals fit): its largest rank total bounds the optimum.
    private static double UpperBound(PartitionProblem problem, CostModel model, Func<int, int, int, double> cost)
    {
        var ranks = problem.StageToRank;
        if (ranks.Distinct().Count() == ranks.Count) return double.PositiveInfinity; // one stage per rank: nothing to prune
        var count = ranks.GroupBy(r => r).ToDictionary(g => g.Key, g => (double)g.Count());
        var stages = Enumerable.Range(0, ranks.Count).ToArray();
        var limits = model.Budgets is { } budgets
            ? new[] { new MinMaxSplit.Limit((s, i, j) => model.StageBytes(s, i, j), stages.Select(s => budgets[ranks[s]] / count[ranks[s]]).ToArray()) }
            : [];
        var split = MinMaxSplit.Solve(model.Layers, stages, (s, i, j) => cost(s, i, j) * count[ranks[s]], limits);
        return split is null ? double.PositiveInfinity : RankTotals(problem, split.Value.Balance, cost).Max();
    }

    // With several stages per rank, the programme under bounds closing in from below: a bound below the optimum finds
    // nothing (quickly, as it prunes hard); the first that finds a split finds the optimum, as every split at most the
    // bound is looked at. The last try is the upper bound, a split known to fit.
    private static (int[] Balance, double Value)? Bounded(PartitionProblem problem, double upper, IReadOnlyList<double> work,
        IReadOnlyList<double> rates, Func<double, (int[] Balance, double Value)?> solve)
    {
        if (double.IsPositiveInfinity(upper)) return solve(upper);
        double lower = Math.Min(upper, work.Sum() / rates.Sum());
        foreach (double f in new[] { 0.01, 0.03, 0.1, 0.3 })
            if (solve(lower + (upper - lower) * f) is { } found) return found;
        return solve(upper);
    }

    private static double[] Speeds(PartitionProblem problem) =>
        problem.DeviceSpeeds?.ToArray() ?? Enumerable.Repeat(1.0, problem.RankCount).ToArray();

    private static double[] RankTotals(PartitionProblem problem, IReadOnlyList<int> balance, Func<int, int, int, double> cost)
    {
        var totals = new double[problem.RankCount];
        int first = 0;
        for (int s = 0; s < balance.Count; first += balance[s], s++) totals[problem.StageToRank[s]] += cost(s, first, first + balance[s]);
        return totals;
    }

    // The least factor by which every budget must grow for a split to fit: the same programme, minimising each rank's
    // bytes as a share of its budget.
    private static PartitionDoesNotFitException DoesNotFit(PartitionProblem problem, CostModel model)
    {
        var budgets = model.Budgets!;
        Func<int, int, int, double> share = (s, i, j) => model.StageBytes(s, i, j) / (double)budgets[problem.StageToRank[s]];
        var (balance, _) = MinMaxSplit.Solve(model.Layers, problem.StageToRank, share, upperBound: UpperBound(problem with { MemoryPerDevice = null }, new CostModel(problem with { MemoryPerDevice = null }), share))!.Value;
        var closest = model.Evaluate(balance);
        int ranks = problem.RankCount;
        int worst = Enumerable.Range(0, ranks).MaxBy(r => closest.RankBytes[r] / (double)budgets[r]);
        double factor = closest.RankBytes[worst] / (double)budgets[worst];
        var given = problem.MemoryPerDevice!;
        // Raised by the factor, and never below what the closest split needs on that rank (round-off).
        var fitting = given.Count == 1
            ? [closest.RankBytes.Max()]
            : Enumerable.Range(0, ranks).Select(r => Math.Max(given[r], Math.Max((long)Math.Ceiling(given[r] * factor), closest.RankBytes[r]))).ToList();
        string Size(long b) => FormattableString.Invariant($"{b / 1e6:0.##} MB ({b:N0} bytes)");
        string message =
            $"No split of the {model.Layers} layers into {problem.StageCount} stages fits MemoryPerDevice: the split that comes closest " +
            $"({string.Join(",", balance)}) needs {Size(closest.RankBytes[worst])} on rank {worst}, whose budget is {Size(budgets[worst])}. " +
            $"The smallest budget{(fitting.Count == 1 ? "" : "s")} that fit: {string.Join(",", fitting.Select(b => b.ToString()))} bytes " +
            $"(CLI: --memory-per-device {string.Join(",", fitting.Select(b => FormattableString.Invariant($"{Math.Ceiling(b / 1e5) / 10:0.0}MB")))}), " +
            "or more ranks, more micro-batches, or activation recomputation.";
        return new PartitionDoesNotFitException(message, worst, closest.RankBytes[worst], budgets[worst], balance, fitting);
    }
}

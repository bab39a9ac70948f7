namespace PipeSharp.Partitioning;

/// <summary>
/// How many consecutive layers each stage gets. Checked against the layer count, or computed so that the
/// largest stage cost (e.g. parameter count) is as small as possible. <see cref="StagePartitioner"/> does the same with
/// measured seconds, device speeds, memory budgets, several stages per rank and message costs.
/// </summary>
public static class Balance
{
    /// <summary>
    /// Checks an explicit balance (layers per stage, in order) against the model's layer count.
    /// </summary>
    /// <exception cref="ArgumentException">A count is below 1, or the counts do not add up to the layer count.</exception>
    public static IReadOnlyList<int> Check(IReadOnlyList<int> balance, int layerCount)
    {
        if (balance.Count == 0)
            throw new ArgumentException("balance is empty: give the number of layers of each stage, e.g. 2,2,2,2,2.", nameof(balance));
        for (int s = 0; s < balance.Count; s++)
        {
            if (balance[s] < 1)
                throw new ArgumentException(
                    $"balance[{s}] is {balance[s]}: every stage needs at least 1 layer. Use fewer stages or move a layer into stage {s}.",
                    nameof(balance));
        }
        int sum = balance.Sum();
        if (sum != layerCount)
            throw new ArgumentException(
                $"balance {string.Join(",", balance)} sums to {sum}, but the model has {layerCount} layers: " +
                $"make the counts add up to {layerCount}.", nameof(balance));
        return balance;
    }

    /// <summary>
    /// Splits layers with the given costs into <paramref name="stages"/> consecutive groups of at least one
    /// layer each, minimising the cost of the most expensive group (ties: earlier stages get fewer layers).
    /// </summary>
    /// <param name="costs">A non-negative cost per layer, e.g. its parameter count.</param>
    /// <param name="stages">The number of stages, between 1 and the number of layers.</param>
    public static IReadOnlyList<int> ByCost(IReadOnlyList<double> costs, int stages)
    {
        CheckStageCount(stages, costs.Count);
        var prefix = new double[costs.Count + 1];
        for (int i = 0; i < costs.Count; i++) prefix[i + 1] = prefix[i] + Math.Max(0, costs[i]);
        // The partitioner's programme with one stage per rank, all of speed 1, no budgets and free messages.
        return MinMaxSplit.Solve(costs.Count, Enumerable.Range(0, stages).ToArray(), (_, i, j) => prefix[j] - prefix[i])!.Value.Balance;
    }

    /// <summary>Throws if <paramref name="stages"/> is not between 1 and <paramref name="layerCount"/>.</summary>
    public static void CheckStageCount(int stages, int layerCount)
    {
        if (stages < 1)
            throw new ArgumentOutOfRangeException(nameof(stages), stages, "The number of stages must be at least 1.");
        if (stages > layerCount)
            throw new ArgumentOutOfRangeException(nameof(stages), stages,
                $"{stages} stages but the model has only {layerCount} layers: use at most {layerCount} stages " +
                "(each stage needs at least one layer).");
    }
}

namespace PipeSharp.Partitioning;

/// <summary>
/// How many consecutive layers each stage gets. Checked against the layer count, or computed so that the
/// largest stage cost (e.g. parameter count) is as small as possible.
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
        return MinimiseSlowest(costs, Enumerable.Repeat(1.0, stages).ToArray());
    }

    /// <summary>
    /// The exact dynamic programme behind <see cref="ByCost"/>: consecutive groups of at least one layer, group s taking
    /// <paramref name="stageScale"/>[s] times the sum of its layers' costs (e.g. the seconds per unit of cost of the rank
    /// that holds it), minimising the largest group (ties: earlier stages get fewer layers).
    /// </summary>
    internal static IReadOnlyList<int> MinimiseSlowest(IReadOnlyList<double> costs, IReadOnlyList<double> stageScale)
    {
        int n = costs.Count, stages = stageScale.Count;
        var prefix = new double[n + 1];
        for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + Math.Max(0, costs[i]);
        double Time(int stage, int from, int to) => stageScale[stage] * (prefix[to] - prefix[from]);

        // best[k, j]: smallest possible maximum stage time when the first j layers form stages 0..k-1.
        var best = new double[stages + 1, n + 1];
        var cut = new int[stages + 1, n + 1];
        for (int j = 0; j <= n; j++) best[1, j] = j >= 1 ? Time(0, 0, j) : double.PositiveInfinity;
        for (int k = 2; k <= stages; k++)
        {
            for (int j = 0; j <= n; j++)
            {
                best[k, j] = double.PositiveInfinity;
                for (int i = k - 1; i < j; i++)
                {
                    double candidate = Math.Max(best[k - 1, i], Time(k - 1, i, j));
                    if (candidate < best[k, j] - 1e-12 * Math.Max(1, candidate))
                    {
                        best[k, j] = candidate;
                        cut[k, j] = i;
                    }
                }
            }
        }
        var counts = new int[stages];
        int end = n;
        for (int k = stages; k >= 2; k--)
        {
            int start = cut[k, end];
            counts[k - 1] = end - start;
            end = start;
        }
        counts[0] = end;
        return counts;
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

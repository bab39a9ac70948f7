namespace PipeSharp.Partitioning;

/// <summary>
/// The exact dynamic programme behind <see cref="StagePartitioner"/> and <see cref="Balance.ByCost"/>: cuts layers
/// 0..n-1 into stages 0..S-1 (each at least one layer, in order), stage s on rank <c>stageToRank[s]</c>, so that the
/// largest rank total of <c>cost(s, first, end)</c> is as small as possible, while each rank's total of each limited
/// resource (<c>use(s, first, end)</c>: bytes, or seconds when another cost is minimised) stays within its capacity.
/// </summary>
/// <remarks>
/// The programme runs stage by stage over the end of the stage. A state after stage s is the largest total of the ranks
/// whose last stage is at most s (closed), and the running time and bytes of each rank with stages on both sides of
/// the cut (open). With one stage per rank no rank is ever open and each cell keeps one state: the classic
/// O(S x n^2) programme. With several stages per rank (interleaved, V) a cell keeps the states no other state of it
/// dominates (each value at most the other's): a dominated state can only lead to a split as bad or worse, so the
/// optimum is kept. Ties go to the first state found, the one whose earlier stages have fewer layers.
/// </remarks>
internal static class MinMaxSplit
{
    private const double Tolerance = 1e-12;

    /// <summary>
    /// A resource each rank may use only so much of: per stage, and each rank's capacity. <paramref name="Left"/>, if
    /// given, bounds what the layers from a cut on can add to any rank: a rank that can no longer reach its capacity
    /// stores 0 there, so that states differing only in a resource that can no longer bind dominate each other.
    /// </summary>
    public sealed record Limit(Func<int, int, int, double> Use, IReadOnlyList<double> Capacity, Func<int, double>? Left = null);

    private sealed class State(double closed, double[] load, double[] used, State? parent, int start)
    {
        public readonly double Closed = closed;
        public readonly double[] Load = load;
        public readonly double[] Used = used; // per limit, per open rank: limit-major
        public readonly State? Parent = parent;
        public readonly int Start = start;
    }

    /// <summary>The best split's layers per stage and its value (the largest rank total), or null if no split fits the capacities.</summary>
    /// <param name="layers">Number of layers n.</param>
    /// <param name="stageToRank">The rank of each stage.</param>
    /// <param name="cost">Cost of stage s holding layers [first, end) on its rank.</param>
    /// <param name="limits">Resources each rank may use only so much of (none: null or empty).</param>
    /// <param name="upperBound">
    /// The value of a split known to fit (e.g. a heuristic's): states worse than it are dropped, which keeps the fronts
    /// small with several stages per rank. The optimum is at most it, so it is still found.
    /// </param>
    /// <param name="work">
    /// Optional, with a bound: each layer's work and each rank's rate, such that a stage's cost is at least its layers'
    /// work over its rank's rate. A state is then dropped when the ranks still to get stages cannot take the layers
    /// left within the bound.
    /// </param>
    public static (int[] Balance, double Value)? Solve(int layers, IReadOnlyList<int> stageToRank, Func<int, int, int, double> cost,
        IReadOnlyList<Limit>? limits = null, double upperBound = double.PositiveInfinity, (IReadOnlyList<double> Layer, IReadOnlyList<double> Rate)? work = null)
    {
        double bound = upperBound + Tolerance * Math.Max(1, Math.Abs(upperBound));
        limits ??= [];
        int stages = stageToRank.Count;
        if (stages < 1 || stages > layers) return null;
        int ranks = stageToRank.Max() + 1;
        var last = new int[ranks];
        var firstStage = Enumerable.Repeat(-1, ranks).ToArray();
        for (int s = 0; s < stages; s++)
        {
            int r = stageToRank[s];
            if (firstStage[r] < 0) firstStage[r] = s;
            last[r] = s;
        }
        int resources = limits.Count;
        // open[s]: the ranks with stages both at or before s and after s, in rank order; slot[s][r] its index there.
        var open = new int[stages][];
        var slot = new int[stages][];
        for (int s = 0; s < stages; s++)
        {
            open[s] = Enumerable.Range(0, ranks).Where(r => firstStage[r] >= 0 && firstStage[r] <= s && last[r] > s).ToArray();
            slot[s] = Enumerable.Repeat(-1, ranks).ToArray();
            for (int k = 0; k < open[s].Length; k++) slot[s][open[s][k]] = k;
        }

        // Work left after layer j, and the rate of the ranks whose first stage comes after stage s.
        bool prune = work is not null && !double.IsPositiveInfinity(upperBound);
        var left = new double[layers + 1];
        var fresh = new double[stages];
        if (prune)
        {
            for (int i = layers - 1; i >= 0; i--) left[i] = left[i + 1] + work!.Value.Layer[i];
            for (int s = 0; s < stages; s++)
                fresh[s] = Enumerable.Range(0, ranks).Where(r => firstStage[r] > s).Sum(r => work!.Value.Rate[r]);
        }

        // cells[j]: the states after the current stage ending at layer j (exclusive).
        var cells = new List<State>?[layers + 1];
        var root = new State(0, [], [], null, 0);
        cells[0] = [root];
        var use = new double[resources];
        var total = new double[resources];
        for (int s = 0; s < stages; s++)
        {
            int r = stageToRank[s];
            int[]? previousSlot = s == 0 ? null : slot[s - 1];
            int[] after = open[s];
            int from = previousSlot?[r] ?? -1;
            int to = slot[s][r];
            var next = new List<State>?[layers + 1];
            // Stage s ends at j in [s+1, n-(S-1-s)]: every stage keeps at least one layer.
            for (int j = s + 1; j <= layers - (stages - 1 - s); j++)
            {
                var front = new List<State>();
                for (int i = s; i < j; i++)
                {
                    if (cells[i] is not { } previous) continue;
                    double c = cost(s, i, j);
                    for (int x = 0; x < resources; x++) use[x] = limits[x].Use(s, i, j);
                    int width = s == 0 ? 0 : open[s - 1].Length;
                    foreach (var state in previous)
                    {
                        double load = (from >= 0 ? state.Load[from] : 0) + c;
                        if (load > bound) continue; // every cost is at least 0: this rank ends above the bound
                        bool fits = true;
                        for (int x = 0; x < resources && fits; x++)
                        {
                            total[x] = (from >= 0 ? state.Used[x * width + from] : 0) + use[x];
                            fits = total[x] <= limits[x].Capacity[r];
                        }
                        if (!fits) continue;
                        double closed = to >= 0 ? state.Closed : Math.Max(state.Closed, load);
                        var loads = new double[after.Length];
                        var used = resources == 0 ? [] : new double[resources * after.Length];
                        for (int k = 0; k < after.Length; k++)
                        {
                            int rank = after[k];
                            int old = previousSlot?[rank] ?? -1;
                            if (rank == r)
                            {
                                loads[k] = load;
                                for (int x = 0; x < resources; x++)
                                    used[x * after.Length + k] = limits[x].Left is { } more && total[x] + more(j) <= limits[x].Capacity[r] ? 0 : total[x];
                            }
                            else if (old >= 0)
                            {
                                loads[k] = state.Load[old];
                                for (int x = 0; x < resources; x++) used[x * after.Length + k] = state.Used[x * width + old];
                            }
                        }
                        if (prune && j < layers)
                        {
                            double room = bound * fresh[s];
                            for (int k = 0; k < after.Length; k++) room += (bound - loads[k]) * work!.Value.Rate[after[k]];
                            if (room < left[j] * (1 - 1e-9)) continue; // the layers left do not fit under the bound
                        }
                        Add(front, new State(closed, loads, used, state, i));
                    }
                }
                if (front.Count > 0) next[j] = front;
            }
            cells = next;
        }
        if (cells[layers] is not { } end || end.Count == 0) return null;
        var best = end[0];
        foreach (var state in end)
            if (state.Closed < best.Closed - Tolerance * Math.Max(1, state.Closed)) best = state;
        var balance = new int[stages];
        int stop = layers;
        var at = best;
        for (int s = stages - 1; s >= 0; s--)
        {
            balance[s] = stop - at.Start;
            stop = at.Start;
            at = at.Parent!;
        }
        return (balance, best.Closed);
    }

    // Keeps the front of states no other dominates; an equal state found later is dropped (earlier stages stay smaller).
    private static void Add(List<State> front, State candidate)
    {
        foreach (var kept in front)
            if (Dominates(kept, candidate)) return;
        front.RemoveAll(kept => Dominates(candidate, kept));
        front.Add(candidate);
    }

    private static bool Dominates(State a, State b)
    {
        if (!AtMost(a.Closed, b.Closed)) return false;
        for (int k = 0; k < a.Load.Length; k++)
            if (!AtMost(a.Load[k], b.Load[k])) return false;
        for (int k = 0; k < a.Used.Length; k++)
            if (a.Used[k] > b.Used[k]) return false;
        return true;
    }

    private static bool AtMost(double a, double b) => a <= b + Tolerance * Math.Max(1, Math.Abs(b));
}

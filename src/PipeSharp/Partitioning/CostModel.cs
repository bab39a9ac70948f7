namespace PipeSharp.Partitioning;

/// <summary>
/// The partitioner's cost model over a checked <see cref="PartitionProblem"/>: a stage's seconds on its rank (its layers
/// over the rank's speed, plus the messages it receives over its two cuts) and its bytes (state plus activations at
/// its peak), from prefix sums, so each is O(1).
/// </summary>
internal sealed class CostModel
{
    private readonly PartitionProblem _problem;
    private readonly double[] _seconds;
    private readonly long[] _state;
    private readonly long[] _activations;

    public CostModel(PartitionProblem problem)
    {
        _problem = problem;
        Layers = problem.LayerSeconds.Count;
        _seconds = Prefix(problem.LayerSeconds);
        _state = Prefix(problem.LayerStateBytes);
        _activations = Prefix(problem.LayerActivationBytes);
        if (problem.MemoryPerDevice is { } m)
            Budgets = Enumerable.Range(0, problem.RankCount).Select(r => m.Count == 1 ? m[0] : m[r]).ToArray();
    }

    /// <summary>Number of layers.</summary>
    public int Layers { get; }

    /// <summary>Each rank's budget (null: none).</summary>
    public long[]? Budgets { get; }

    private double Speed(int rank) => _problem.DeviceSpeeds?[rank] ?? 1;

    /// <summary>Seconds of stage <paramref name="s"/> holding layers [i, j) on its rank, per micro-batch.</summary>
    public double StageSeconds(int s, int i, int j)
    {
        var ranks = _problem.StageToRank;
        int r = ranks[s];
        double t = (_seconds[j] - _seconds[i]) / Speed(r);
        if (s > 0) t += Message(ranks[s - 1], r, i - 1);                  // the activation from the stage before
        if (s < ranks.Count - 1) t += Message(ranks[s + 1], r, j - 1);    // the gradient from the stage after
        return t;
    }

    /// <summary>Bytes of stage <paramref name="s"/> holding layers [i, j).</summary>
    public long StageBytes(int s, int i, int j)
    {
        long peak = _problem.StagePeakMicroBatches?[s] ?? 1;
        return _state[j] - _state[i] + peak * (_activations[j] - _activations[i]);
    }

    // The message rank `to` receives over the cut after layer `layer`, sent by rank `from`.
    private double Message(int from, int to, int layer)
    {
        if (from == to || _problem.TransferSeconds is not { } transfer) return 0;
        long bytes = _problem.LayerOutputBytes?[layer] ?? 0;
        double t = transfer(from, to, bytes);
        if (!(t >= 0) || double.IsInfinity(t))
            throw new ArgumentException($"TransferSeconds({from}, {to}, {bytes}) is {t}: a message's seconds must be finite and at least 0.", "transferSeconds");
        return t;
    }

    /// <summary>The budgets as limits of the programme (none without budgets).</summary>
    public IReadOnlyList<MinMaxSplit.Limit> MemoryLimits()
    {
        if (Budgets is null) return [];
        long peak = _problem.StagePeakMicroBatches is { Count: > 0 } p ? p.Max() : 1;
        return [new MinMaxSplit.Limit((s, i, j) => StageBytes(s, i, j), Budgets.Select(b => (double)b).ToArray(),
            j => _state[Layers] - _state[j] + peak * (_activations[Layers] - _activations[j]))];
    }

    /// <summary>The prediction for a split.</summary>
    public Partition Evaluate(IReadOnlyList<int> balance)
    {
        int ranks = _problem.RankCount;
        var seconds = new double[ranks];
        var bytes = new long[ranks];
        int first = 0;
        for (int s = 0; s < balance.Count; s++)
        {
            int r = _problem.StageToRank[s];
            seconds[r] += StageSeconds(s, first, first + balance[s]);
            bytes[r] += StageBytes(s, first, first + balance[s]);
            first += balance[s];
        }
        return new Partition(balance.ToArray(), _problem.StageToRank.ToArray(), seconds, bytes);
    }

    private static double[] Prefix(IReadOnlyList<double> values)
    {
        var prefix = new double[values.Count + 1];
        for (int i = 0; i < values.Count; i++) prefix[i + 1] = prefix[i] + values[i];
        return prefix;
    }

    private long[] Prefix(IReadOnlyList<long>? values)
    {
        var prefix = new long[Layers + 1];
        for (int i = 0; i < Layers; i++) prefix[i + 1] = prefix[i] + (values?[i] ?? 0);
        return prefix;
    }
}

namespace PipeSharp.Runtime;

/// <summary>
/// Which layers change rank when the balance changes from one split to another with the same stages and placement:
/// each layer's stage and rank before and after, and the moves grouped by (from rank, to rank), in that order.
/// </summary>
internal sealed class LayerMovePlan
{
    private LayerMovePlan(IReadOnlyList<int> before, IReadOnlyList<int> after, IReadOnlyList<int> stageToRank)
    {
        Before = before;
        After = after;
        OldStage = StageOfLayer(before);
        NewStage = StageOfLayer(after);
        OldRank = OldStage.Select(s => stageToRank[s]).ToArray();
        NewRank = NewStage.Select(s => stageToRank[s]).ToArray();
        Moves = Enumerable.Range(0, OldStage.Length)
            .Where(i => OldRank[i] != NewRank[i])
            .GroupBy(i => (From: OldRank[i], To: NewRank[i]))
            .OrderBy(g => g.Key.From).ThenBy(g => g.Key.To)
            .Select(g => (g.Key.From, g.Key.To, (IReadOnlyList<int>)g.Order().ToList()))
            .ToList();
    }

    /// <summary>Layers per stage before the move.</summary>
    public IReadOnlyList<int> Before { get; }

    /// <summary>Layers per stage after the move.</summary>
    public IReadOnlyList<int> After { get; }

    /// <summary>Each layer's stage before and after.</summary>
    public int[] OldStage { get; }
    public int[] NewStage { get; }

    /// <summary>Each layer's rank before and after.</summary>
    public int[] OldRank { get; }
    public int[] NewRank { get; }

    /// <summary>The layers that change rank, by (from, to), ordered by from rank then to rank: the same on every process.</summary>
    public IReadOnlyList<(int From, int To, IReadOnlyList<int> Layers)> Moves { get; }

    /// <summary>The first layer of each stage after the move.</summary>
    public int FirstLayer(int stage) => After.Take(stage).Sum();

    public static LayerMovePlan Create(IReadOnlyList<int> before, IReadOnlyList<int> after, IReadOnlyList<int> stageToRank) =>
        new(before, after, stageToRank);

    /// <summary>The stage of every layer under <paramref name="balance"/>.</summary>
    public static int[] StageOfLayer(IReadOnlyList<int> balance)
    {
        var result = new int[balance.Sum()];
        for (int s = 0, layer = 0; s < balance.Count; s++)
            for (int k = 0; k < balance[s]; k++) result[layer++] = s;
        return result;
    }
}

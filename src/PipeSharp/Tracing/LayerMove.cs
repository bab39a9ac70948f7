namespace PipeSharp.Tracing;

/// <summary>
/// Layers that moved from one rank to another between two training steps (a rebalancing), with their parameters,
/// gradients and optimizer state. Each replica moved the same layers.
/// </summary>
/// <param name="Step">The number of training steps taken before the move (the move happened after that step).</param>
/// <param name="FromRank">The pipeline rank that held the layers before.</param>
/// <param name="ToRank">The pipeline rank that holds them now.</param>
/// <param name="Layers">The layers moved (model indices, ascending).</param>
/// <param name="PredictedGain">
/// The share of the step time the move was predicted to save (0.25: a quarter) from the ranks' measured speeds;
/// null for a move asked for by hand (<c>Pipeline.Rebalance</c>).
/// </param>
public sealed record LayerMove(long Step, int FromRank, int ToRank, IReadOnlyList<int> Layers, double? PredictedGain)
{
    /// <summary>One line, e.g. <c>after step 12: layers 2,3 rank 0 -> rank 1 (predicted gain 21%)</c>.</summary>
    public override string ToString() =>
        $"after step {Step}: layer{(Layers.Count > 1 ? "s" : "")} {string.Join(",", Layers)} rank {FromRank} -> rank {ToRank}" +
        (PredictedGain is { } g ? $" (predicted gain {g:P0})" : " (asked for)");
}

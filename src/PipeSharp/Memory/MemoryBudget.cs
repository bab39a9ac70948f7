namespace PipeSharp.Memory;

/// <summary>
/// Checks a prediction against per-rank budgets (one for every rank, or one per rank) and refuses a plan that does
/// not fit, with what would (<see cref="MemoryAlternatives"/>).
/// </summary>
internal static class MemoryBudget
{
    /// <summary>Refuses a budget list that is neither one entry nor one per rank, or holds a size below 1 byte.</summary>
    public static void CheckOption(IReadOnlyList<long>? budgets, int ranks)
    {
        if (budgets is null) return;
        if (budgets.Count != 1 && budgets.Count != ranks)
            throw new ArgumentException(
                $"MemoryPerDevice has {budgets.Count} entries for {ranks} ranks: give one budget for every rank or one per rank " +
                $"(CLI: --memory-per-device 2GB or {string.Join(",", Enumerable.Repeat("2GB", ranks))}).", "memoryPerDevice");
        if (budgets.FirstOrDefault(b => b < 1) is var bad && budgets.Any(b => b < 1))
            throw new ArgumentException($"MemoryPerDevice holds {bad} bytes: every budget must be at least 1 byte, e.g. 2 GB = 2_000_000_000.", "memoryPerDevice");
    }

    /// <summary>The budget of <paramref name="rank"/>.</summary>
    public static long Of(IReadOnlyList<long> budgets, int rank) => budgets.Count == 1 ? budgets[0] : budgets[rank];

    /// <summary>Throws <see cref="MemoryBudgetExceededException"/> if a rank's predicted peak exceeds its budget.</summary>
    /// <param name="prediction">The prediction.</param>
    /// <param name="budgets">One budget, or one per rank.</param>
    /// <param name="plan">The layout, for the alternatives (null: none are tried).</param>
    /// <param name="inputs">The inputs the prediction came from.</param>
    /// <param name="what">What was predicted, for the message (e.g. "before training" or "parameters, gradients and optimizer state alone").</param>
    public static void Check(MemoryPrediction prediction, IReadOnlyList<long> budgets, MemoryPlan? plan, MemoryModelInputs inputs, string what)
    {
        var over = prediction.Ranks.Where(r => r.TotalBytes > Of(budgets, r.Rank)).ToList();
        if (over.Count == 0) return;
        var first = over[0];
        long allowed = Of(budgets, first.Rank);
        var fits = plan is null ? [] : MemoryAlternatives.Find(plan, inputs, budgets);
        var wouldFit = fits.Select(f => $"{f.Change} (largest rank {MemorySize.Format(f.LargestRankBytes)})").ToList();
        string others = over.Count > 1 ? $" (also over: {string.Join(", ", over.Skip(1).Select(r => $"rank {r.Rank}, {MemorySize.Format(r.TotalBytes)}"))})" : "";
        string advice = wouldFit.Count > 0
            ? "What the same model predicts to fit: " + string.Join("; ", wouldFit) + "."
            : "None of the single changes tried fits (more ranks, another schedule, more micro-batches, full recomputation): " +
              "raise MemoryPerDevice, or combine changes (more ranks and recomputation).";
        string message =
            $"The pipeline does not fit its memory budget ({what}): rank {first.Rank} is predicted to need {MemorySize.Format(first.TotalBytes)} " +
            $"({first.TotalBytes:N0} bytes) but MemoryPerDevice allows {MemorySize.Format(allowed)} ({allowed:N0} bytes){others}. " +
            $"Prediction: {first}; optimizer state {prediction.OptimizerStateSource}. {advice}";
        throw new MemoryBudgetExceededException(message, first.Rank, first.TotalBytes, allowed, prediction, wouldFit);
    }
}

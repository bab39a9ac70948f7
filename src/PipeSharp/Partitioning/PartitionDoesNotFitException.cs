namespace PipeSharp.Partitioning;

/// <summary>
/// No split of the model into its stages fits the memory budgets (<see cref="PartitionProblem.MemoryPerDevice"/>, the
/// pipeline's <c>MemoryPerDevice</c>): thrown by <see cref="StagePartitioner.Solve"/> before anything is built. It names
/// the split that comes closest, its rank furthest over budget with the bytes it needs, and the smallest budgets that
/// would fit. An <see cref="ArgumentException"/> on <c>memoryPerDevice</c>, like other refused options.
/// </summary>
public sealed class PartitionDoesNotFitException : ArgumentException
{
    /// <summary>Creates the exception.</summary>
    public PartitionDoesNotFitException(string message, int rank, long neededBytes, long allowedBytes,
        IReadOnlyList<int> closestBalance, IReadOnlyList<long> fittingBudgets)
        : base(message, "memoryPerDevice")
    {
        Rank = rank;
        NeededBytes = neededBytes;
        AllowedBytes = allowedBytes;
        ClosestBalance = closestBalance;
        FittingBudgets = fittingBudgets;
    }

    /// <summary>The rank furthest over its budget (as a share of it) in the split that comes closest to fitting.</summary>
    public int Rank { get; }

    /// <summary>The bytes that rank needs in that split.</summary>
    public long NeededBytes { get; }

    /// <summary>That rank's budget.</summary>
    public long AllowedBytes { get; }

    /// <summary>The split whose largest share of a budget is smallest: layers per stage.</summary>
    public IReadOnlyList<int> ClosestBalance { get; }

    /// <summary>
    /// The smallest budgets that fit, in the proportions given (one entry if one budget was given for every rank):
    /// each budget raised by the same factor, the least for which some split fits.
    /// </summary>
    public IReadOnlyList<long> FittingBudgets { get; }
}

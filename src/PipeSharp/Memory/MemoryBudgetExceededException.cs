namespace PipeSharp.Memory;

/// <summary>
/// A pipeline's predicted memory does not fit its budget (<c>PipelineOptions.MemoryPerDevice</c>): thrown before
/// training starts, naming the rank, the predicted and allowed bytes, and the changes the same memory model predicts
/// to fit. It is an <see cref="ArgumentException"/> on the option <c>memoryPerDevice</c>, like other refused options.
/// </summary>
public sealed class MemoryBudgetExceededException : ArgumentException
{
    /// <summary>Creates the exception.</summary>
    public MemoryBudgetExceededException(string message, int rank, long predictedBytes, long allowedBytes,
        MemoryPrediction prediction, IReadOnlyList<string> wouldFit)
        : base(message, "memoryPerDevice")
    {
        Rank = rank;
        PredictedBytes = predictedBytes;
        AllowedBytes = allowedBytes;
        Prediction = prediction;
        WouldFit = wouldFit;
    }

    /// <summary>The first rank (of a replica) whose predicted peak exceeds its budget.</summary>
    public int Rank { get; }

    /// <summary>That rank's predicted peak in bytes.</summary>
    public long PredictedBytes { get; }

    /// <summary>That rank's budget in bytes.</summary>
    public long AllowedBytes { get; }

    /// <summary>The whole prediction, every rank with its parts.</summary>
    public MemoryPrediction Prediction { get; }

    /// <summary>Changes of the options that the same model predicts to fit (empty if none of those tried does).</summary>
    public IReadOnlyList<string> WouldFit { get; }
}

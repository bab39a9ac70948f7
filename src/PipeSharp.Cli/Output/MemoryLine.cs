using PipeSharp.Memory;
using PipeSharp.Runtime;

namespace PipeSharp.Cli.Output;

/// <summary>The line of <c>train</c>'s output that puts the measured memory peak beside the prediction.</summary>
internal static class MemoryLine
{
    /// <summary>E.g. "memory: predicted 31.5 MB (rank 0 18.9 MB, rank 1 12.6 MB; ...), measured peak 30.0 MB (0.95 of predicted)"; null without a prediction.</summary>
    public static string? Of(Pipeline pipe)
    {
        if (pipe.PredictedMemory is not { } prediction || pipe.LastStep?.PredictedMemoryBytes is not { } predicted) return null;
        string ranks = string.Join(", ", prediction.Ranks.Select(r => $"rank {r.Rank} {MemorySize.Format(r.TotalBytes)}"));
        string measured = pipe.PeakMemoryBytes is { } peak
            ? $"measured peak {MemorySize.Format(peak)} ({(double)peak / predicted:0.00} of predicted)"
            : "measured peak not available on this platform";
        return $"memory: predicted {MemorySize.Format(predicted)} for this process ({ranks}; optimizer state {prediction.OptimizerStateSource}), {measured}";
    }
}

using PipeSharp.Data;
using static TorchSharp.torch;

namespace PipeSharp.Training;

/// <summary>
/// The built-in task that needs no data (minGPT's demo): read a sequence of digits, write it sorted. The loss counts
/// only the answer; <see cref="SortingTask.Accuracy"/> checks whole answers.
/// </summary>
public sealed class SortingLanguageTask(SortingTask task) : ILanguageModelTask
{
    /// <summary>The sorting problems.</summary>
    public SortingTask Task { get; } = task;

    /// <inheritdoc />
    public string Description => $"built-in sorting task ({Task.Length} digits from 0..{Task.Digits - 1}; no data file)";

    /// <inheritdoc />
    public int VocabularySize => Task.VocabularySize;

    /// <inheritdoc />
    public (Tensor Input, Tensor Target) Batch(bool validation, long index, int batchSize, int contextLength, long seed)
    {
        if (contextLength != Task.ContextLength)
            throw new ArgumentException($"the sorting task's sequences are {Task.ContextLength} tokens; use that context length.", nameof(contextLength));
        return Task.Batch(index, batchSize, seed, validation ? CorpusSplit.Validation : CorpusSplit.Train);
    }

    /// <inheritdoc />
    public Tensor Loss(Tensor logits, Tensor targets) => SortingTask.Loss(logits, targets);
}

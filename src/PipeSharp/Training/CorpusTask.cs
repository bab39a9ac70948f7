using PipeSharp.Data;
using PipeSharp.Models;
using static TorchSharp.torch;

namespace PipeSharp.Training;

/// <summary>Next-token prediction on a text file: random windows of its training and validation splits.</summary>
public sealed class CorpusTask(TextCorpus corpus) : ILanguageModelTask
{
    /// <summary>The text.</summary>
    public TextCorpus Corpus { get; } = corpus;

    /// <inheritdoc />
    public string Description =>
        $"{Path.GetFileName(Corpus.Source)} ({Corpus.Tokenizer.Kind} tokens, vocabulary {Corpus.Tokenizer.VocabularySize}, " +
        $"{Corpus.TrainTokens:N0} train / {Corpus.ValidationTokens:N0} validation)";

    /// <inheritdoc />
    public int VocabularySize => Corpus.Tokenizer.VocabularySize;

    /// <inheritdoc />
    public (Tensor Input, Tensor Target) Batch(bool validation, long index, int batchSize, int contextLength, long seed) =>
        Corpus.Batch(validation ? CorpusSplit.Validation : CorpusSplit.Train, index, batchSize, contextLength, seed);

    /// <inheritdoc />
    public Tensor Loss(Tensor logits, Tensor targets) => Gpt.Loss(logits, targets);
}

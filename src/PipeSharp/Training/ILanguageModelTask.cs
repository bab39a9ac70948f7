using static TorchSharp.torch;

namespace PipeSharp.Training;

/// <summary>
/// What a language model learns from: batches of token ids and their next-token targets, and how they are scored.
/// Batches are a pure function of their arguments, so a resumed run sees exactly the batches of an uninterrupted one.
/// </summary>
public interface ILanguageModelTask
{
    /// <summary>A short description for logs, e.g. "tinyshakespeare.txt (char, 65 tokens)".</summary>
    string Description { get; }

    /// <summary>Number of token ids.</summary>
    int VocabularySize { get; }

    /// <summary>Token ids [batchSize, contextLength] and targets of the same shape (int64).</summary>
    /// <param name="validation">From the held-out split instead of the training split.</param>
    /// <param name="index">Which batch: the same index always gives the same batch.</param>
    /// <param name="batchSize">Sequences per batch.</param>
    /// <param name="contextLength">Tokens per sequence.</param>
    /// <param name="seed">The run's seed.</param>
    (Tensor Input, Tensor Target) Batch(bool validation, long index, int batchSize, int contextLength, long seed);

    /// <summary>The mean loss of logits [B, T, V] against targets [B, T].</summary>
    Tensor Loss(Tensor logits, Tensor targets);
}

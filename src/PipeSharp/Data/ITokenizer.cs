namespace PipeSharp.Data;

/// <summary>
/// Turns text into token ids for a <see cref="Models.Gpt"/> and back. Two kinds exist: <c>"char"</c>
/// (<see cref="CharTokenizer"/>, one id per character of the training text) and <c>"gpt2"</c>
/// (<see cref="Gpt2Tokenizer"/>, GPT-2's byte-level BPE). Make one with <see cref="Tokenizers"/>; save its
/// <see cref="Spec"/> with a checkpoint and rebuild it with <see cref="Tokenizers.FromSpec"/>.
/// </summary>
public interface ITokenizer
{
    /// <summary>The kind of tokenizer: <c>"char"</c> or <c>"gpt2"</c>.</summary>
    string Kind { get; }

    /// <summary>Number of token ids; every id is in [0, VocabularySize). The model's vocabulary must be this size.</summary>
    int VocabularySize { get; }

    /// <summary>The token ids of <paramref name="text"/>.</summary>
    /// <exception cref="ArgumentException">The text cannot be encoded (a char tokenizer met an unknown character).</exception>
    int[] Encode(string text);

    /// <summary>The text of the token ids <paramref name="ids"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside [0, VocabularySize).</exception>
    string Decode(IEnumerable<int> ids);

    /// <summary>What is needed to rebuild this tokenizer exactly (JSON-serialisable).</summary>
    TokenizerSpec Spec { get; }
}

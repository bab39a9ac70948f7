namespace PipeSharp.Data;

/// <summary>Makes tokenizers by kind, or rebuilds them from a saved <see cref="TokenizerSpec"/>.</summary>
public static class Tokenizers
{
    /// <summary>The kind of <see cref="CharTokenizer"/>.</summary>
    public const string CharKind = "char";

    /// <summary>The kind of <see cref="Gpt2Tokenizer"/>.</summary>
    public const string Gpt2Kind = "gpt2";

    /// <summary>The kinds <see cref="Create"/> accepts.</summary>
    public static IReadOnlyList<string> Kinds { get; } = [CharKind, Gpt2Kind];

    /// <summary>
    /// A tokenizer of kind <paramref name="kind"/>: <c>"char"</c> learns its characters from
    /// <paramref name="trainingText"/>; <c>"gpt2"</c> ignores it.
    /// </summary>
    /// <exception cref="ArgumentException">The kind is unknown, or a char tokenizer is given no training text.</exception>
    public static ITokenizer Create(string kind, string? trainingText)
    {
        switch (Normalise(kind, nameof(kind)))
        {
            case CharKind:
                if (string.IsNullOrEmpty(trainingText))
                    throw new ArgumentException(
                        "a char tokenizer learns its characters from training text, and none was given: pass the training text (--data), or use --tokenizer gpt2.",
                        nameof(trainingText));
                return CharTokenizer.Train(trainingText);
            default:
                return Gpt2Tokenizer.Shared;
        }
    }

    /// <summary>Rebuilds the tokenizer that <paramref name="spec"/> describes, with the same ids.</summary>
    /// <exception cref="ArgumentException">The spec names an unknown kind, or a char spec has no characters.</exception>
    public static ITokenizer FromSpec(TokenizerSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        switch (Normalise(spec.Kind, nameof(spec)))
        {
            case CharKind:
                if (string.IsNullOrEmpty(spec.Characters))
                    throw new ArgumentException(
                        "the char tokenizer spec has no characters: it must list the vocabulary in id order (save ITokenizer.Spec, not a hand-made spec).",
                        nameof(spec));
                return CharTokenizer.FromCharacters(spec.Characters);
            default:
                return Gpt2Tokenizer.Shared;
        }
    }

    // The kind in lower case, or a clear error if it is not one we know.
    private static string Normalise(string? kind, string paramName)
    {
        string k = kind?.Trim().ToLowerInvariant() ?? "";
        if (k is CharKind or Gpt2Kind) return k;
        throw new ArgumentException($"unknown tokenizer kind '{kind}': use '{CharKind}' or '{Gpt2Kind}'.", paramName);
    }
}

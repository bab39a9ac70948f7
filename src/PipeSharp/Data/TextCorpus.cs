using System.Text;
using static TorchSharp.torch;

namespace PipeSharp.Data;

/// <summary>
/// A text file tokenised once into ids, split as nanoGPT does: the last <c>validationFraction</c> of the tokens is
/// the validation split, the rest the training split. <see cref="Batch"/> draws random windows for next-token
/// prediction; which windows is a pure function of (seed, split, batch index), so any batch can be regenerated.
/// </summary>
public sealed class TextCorpus
{
    private readonly int[] _tokens;
    private readonly int _trainTokens;

    private TextCorpus(string source, ITokenizer tokenizer, int[] tokens, int trainTokens)
    {
        Source = source;
        Tokenizer = tokenizer;
        _tokens = tokens;
        _trainTokens = trainTokens;
    }

    /// <summary>The tokenizer the text was encoded with (save its <see cref="ITokenizer.Spec"/> with a checkpoint).</summary>
    public ITokenizer Tokenizer { get; }

    /// <summary>Where the text came from: the file's full path, or <c>"(text)"</c>.</summary>
    public string Source { get; }

    /// <summary>Number of tokens in the training split.</summary>
    public int TrainTokens => _trainTokens;

    /// <summary>Number of tokens in the validation split (the end of the text).</summary>
    public int ValidationTokens => _tokens.Length - _trainTokens;

    /// <summary>Number of tokens in the given split.</summary>
    public int Tokens(CorpusSplit split) => split == CorpusSplit.Train ? TrainTokens : ValidationTokens;

    /// <summary>
    /// Loads and tokenises the UTF-8 text file <paramref name="path"/> (a leading byte order mark is dropped).
    /// </summary>
    /// <param name="path">The text file.</param>
    /// <param name="tokenizer">The tokenizer to use (e.g. rebuilt from a checkpoint); null makes one of <paramref name="tokenizerKind"/> from the text.</param>
    /// <param name="tokenizerKind"><c>"char"</c> or <c>"gpt2"</c>; used only when <paramref name="tokenizer"/> is null.</param>
    /// <param name="validationFraction">The share of tokens, taken from the end, held out for validation; in [0, 1).</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="ArgumentException">The file is empty or only whitespace, or an argument is invalid.</exception>
    /// <exception cref="InvalidDataException">The file is not valid UTF-8 (the message gives the byte offset).</exception>
    public static TextCorpus Load(string path, ITokenizer? tokenizer = null, string tokenizerKind = Tokenizers.CharKind, double validationFraction = 0.1)
    {
        if (string.IsNullOrWhiteSpace(path))
            throw new ArgumentException("no data file was given: pass --data with an existing UTF-8 text file.", nameof(path));
        CheckOptions(tokenizer, tokenizerKind, validationFraction);
        string fullPath = Path.GetFullPath(path);
        if (!File.Exists(fullPath))
            throw new FileNotFoundException(
                Directory.Exists(fullPath)
                    ? $"data file '{fullPath}' is a directory, not a file: pass --data with an existing UTF-8 text file."
                    : $"data file '{fullPath}' does not exist: pass --data with an existing UTF-8 text file.",
                fullPath);
        string text = ReadUtf8(fullPath);
        if (string.IsNullOrWhiteSpace(text))
            throw new ArgumentException(
                $"data file '{fullPath}' is {(text.Length == 0 ? "empty" : "only whitespace")}: pass --data with a UTF-8 text file that holds the training text.",
                nameof(path));
        return Build(fullPath, text, tokenizer, tokenizerKind, validationFraction);
    }

    /// <summary>Tokenises <paramref name="text"/> held in memory; otherwise as <see cref="Load"/>.</summary>
    /// <exception cref="ArgumentException">The text is empty or only whitespace, or an argument is invalid.</exception>
    public static TextCorpus FromText(string text, ITokenizer? tokenizer = null, string tokenizerKind = Tokenizers.CharKind, double validationFraction = 0.1)
    {
        ArgumentNullException.ThrowIfNull(text);
        CheckOptions(tokenizer, tokenizerKind, validationFraction);
        if (string.IsNullOrWhiteSpace(text))
            throw new ArgumentException("the text is empty or only whitespace: give the training text.", nameof(text));
        return Build("(text)", text, tokenizer, tokenizerKind, validationFraction);
    }

    /// <summary>
    /// A batch of <paramref name="batchSize"/> windows of <paramref name="contextLength"/> + 1 consecutive tokens
    /// from <paramref name="split"/>: Input is each window's first T tokens, Target the next T (Input shifted by
    /// one), both int64 [batchSize, contextLength]. The windows depend only on (<paramref name="seed"/>,
    /// <paramref name="split"/>, <paramref name="batchIndex"/>), so batch k is the same whenever it is drawn.
    /// The caller owns the tensors.
    /// </summary>
    /// <exception cref="ArgumentException">The split has fewer than contextLength + 1 tokens.</exception>
    public (Tensor Input, Tensor Target) Batch(CorpusSplit split, long batchIndex, int batchSize, int contextLength, long seed)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "The batch size must be at least 1.");
        CheckContextLength(contextLength, split);
        int offset = split == CorpusSplit.Train ? 0 : _trainTokens;
        long windows = Tokens(split) - contextLength; // possible start positions
        var random = StableRandom.For(seed, (long)split + 1, batchIndex);
        var input = new long[(long)batchSize * contextLength];
        var target = new long[input.Length];
        for (int b = 0; b < batchSize; b++)
        {
            int start = offset + (int)random.NextBelow(windows);
            int row = b * contextLength;
            for (int t = 0; t < contextLength; t++)
            {
                input[row + t] = _tokens[start + t];
                target[row + t] = _tokens[start + t + 1];
            }
        }
        long[] shape = [batchSize, contextLength];
        return (tensor(input, shape, ScalarType.Int64), tensor(target, shape, ScalarType.Int64));
    }

    /// <summary>
    /// Throws unless both splits (or only <paramref name="split"/>, if given) hold a window of
    /// <paramref name="contextLength"/> + 1 tokens; call it before training to fail before any work.
    /// </summary>
    /// <exception cref="ArgumentException">A split is too short for the context length.</exception>
    public void CheckContextLength(int contextLength, CorpusSplit? split = null)
    {
        if (contextLength < 1) throw new ArgumentOutOfRangeException(nameof(contextLength), contextLength, "The context length must be at least 1.");
        foreach (var s in split is { } only ? [only] : new[] { CorpusSplit.Train, CorpusSplit.Validation })
        {
            int n = Tokens(s);
            if (n < contextLength + 1)
                throw new ArgumentException(
                    $"context length {contextLength} is longer than the {(s == CorpusSplit.Train ? "training" : "validation")} split ({n} tokens; a window needs {contextLength + 1}): use a shorter --context or more text.",
                    nameof(contextLength));
        }
    }

    private static void CheckOptions(ITokenizer? tokenizer, string tokenizerKind, double validationFraction)
    {
        if (!(validationFraction >= 0 && validationFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(validationFraction), validationFraction,
                "The validation fraction must be in [0, 1), e.g. 0.1 to hold out the last 10% of the tokens.");
        if (tokenizer is null && !Tokenizers.Kinds.Contains(tokenizerKind?.Trim().ToLowerInvariant()))
            throw new ArgumentException($"unknown tokenizer kind '{tokenizerKind}': use '{Tokenizers.CharKind}' or '{Tokenizers.Gpt2Kind}'.", nameof(tokenizerKind));
    }

    private static TextCorpus Build(string source, string text, ITokenizer? tokenizer, string tokenizerKind, double validationFraction)
    {
        tokenizer ??= Tokenizers.Create(tokenizerKind, text);
        int[] tokens = tokenizer.Encode(text);
        int validation = (int)Math.Round(tokens.Length * validationFraction);
        return new TextCorpus(source, tokenizer, tokens, tokens.Length - validation);
    }

    // Strict UTF-8: an invalid byte is an error that names its offset, never a silent U+FFFD.
    private static string ReadUtf8(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        int bom = bytes.AsSpan().StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]) ? 3 : 0;
        var strict = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        try
        {
            return strict.GetString(bytes, bom, bytes.Length - bom);
        }
        catch (DecoderFallbackException e)
        {
            string where = e.Index >= 0 ? $" at byte offset {bom + e.Index}" : "";
            string what = e.BytesUnknown is { Length: > 0 } unknown ? $" (bytes {string.Join(" ", unknown.Select(b => $"0x{b:X2}"))})" : "";
            throw new InvalidDataException(
                $"data file '{path}' is not valid UTF-8{where}{what}: convert it to UTF-8 (e.g. iconv -t UTF-8) or pass --data with another text file.",
                e);
        }
    }
}

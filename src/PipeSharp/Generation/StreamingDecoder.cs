using PipeSharp.Data;

namespace PipeSharp.Generation;

/// <summary>
/// Turns tokens into text one at a time, for printing generated text as it comes: each call gives the text the new
/// token adds, so that the pieces put together are the text of all the tokens decoded at once. A token that ends
/// inside a character (GPT-2's byte-level tokens can split a UTF-8 sequence) gives nothing until the character is
/// complete. Only the last few tokens are kept.
/// </summary>
public sealed class StreamingDecoder
{
    private const int Kept = 8;     // tokens of context for the next piece (separators, merges)
    private const int MaxHeld = 4;  // a UTF-8 character is at most 4 bytes
    private readonly ITokenizer _tokenizer;
    private readonly List<int> _emitted = [];
    private readonly List<int> _held = [];

    /// <summary>Creates a decoder with <paramref name="tokenizer"/>.</summary>
    public StreamingDecoder(ITokenizer tokenizer) => _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));

    /// <summary>The text of <paramref name="prompt"/>, which the generated tokens continue.</summary>
    public string Start(IReadOnlyList<int> prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        _emitted.Clear();
        _held.Clear();
        _emitted.AddRange(prompt.Skip(Math.Max(0, prompt.Count - Kept)));
        return _tokenizer.Decode(prompt);
    }

    /// <summary>The text <paramref name="token"/> adds (empty while it ends inside a character).</summary>
    public string Add(int token)
    {
        _held.Add(token);
        string before = _tokenizer.Decode(_emitted);
        string all = _tokenizer.Decode(_emitted.Concat(_held));
        bool complete = all.StartsWith(before, StringComparison.Ordinal) && !all.EndsWith('\uFFFD');
        if (!complete && _held.Count < MaxHeld) return "";
        string piece = all.StartsWith(before, StringComparison.Ordinal) ? all[before.Length..] : _tokenizer.Decode(_held);
        Emit();
        return piece;
    }

    /// <summary>The text of any tokens still held (at the end of generation).</summary>
    public string Flush()
    {
        if (_held.Count == 0) return "";
        string before = _tokenizer.Decode(_emitted), all = _tokenizer.Decode(_emitted.Concat(_held));
        string piece = all.StartsWith(before, StringComparison.Ordinal) ? all[before.Length..] : _tokenizer.Decode(_held);
        Emit();
        return piece;
    }

    private void Emit()
    {
        _emitted.AddRange(_held);
        _held.Clear();
        if (_emitted.Count > Kept) _emitted.RemoveRange(0, _emitted.Count - Kept);
    }
}

using System.Globalization;
using System.Text;

namespace PipeSharp.Data;

/// <summary>
/// A character-level tokenizer, as nanoGPT's Shakespeare demo uses: the vocabulary is the distinct UTF-16 chars
/// of the training text in ordinal order, and each char is one token. Text with a char the training text lacks
/// cannot be encoded.
/// </summary>
public sealed class CharTokenizer : ITokenizer
{
    private const int MaxListed = 200;
    private readonly string _characters;
    private readonly int[] _ids; // char -> id, -1 where unknown; as long as the largest known char + 1

    private CharTokenizer(string characters)
    {
        _characters = characters;
        _ids = new int[characters.Max() + 1];
        Array.Fill(_ids, -1);
        for (int i = 0; i < characters.Length; i++)
        {
            if (_ids[characters[i]] >= 0)
                throw new ArgumentException(
                    $"character {Describe(characters[i])} appears twice in the vocabulary: each character must be listed once.", nameof(characters));
            _ids[characters[i]] = i;
        }
    }

    /// <summary>A tokenizer whose vocabulary is the sorted distinct chars of <paramref name="text"/>.</summary>
    /// <exception cref="ArgumentException">The text is empty.</exception>
    public static CharTokenizer Train(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0)
            throw new ArgumentException("cannot learn a character vocabulary from empty text: give the training text.", nameof(text));
        var seen = new bool[char.MaxValue + 1];
        foreach (char c in text) seen[c] = true;
        var characters = new StringBuilder();
        for (int c = 0; c <= char.MaxValue; c++)
            if (seen[c]) characters.Append((char)c);
        return new CharTokenizer(characters.ToString());
    }

    /// <summary>A tokenizer whose id i is <paramref name="characters"/>[i] (as saved in <see cref="TokenizerSpec.Characters"/>).</summary>
    /// <exception cref="ArgumentException">The characters are empty or repeat one.</exception>
    public static CharTokenizer FromCharacters(string characters)
    {
        ArgumentNullException.ThrowIfNull(characters);
        if (characters.Length == 0)
            throw new ArgumentException("a char tokenizer needs at least one character.", nameof(characters));
        return new CharTokenizer(characters);
    }

    /// <inheritdoc />
    public string Kind => Tokenizers.CharKind;

    /// <inheritdoc />
    public int VocabularySize => _characters.Length;

    /// <summary>The vocabulary in id order.</summary>
    public string Characters => _characters;

    /// <inheritdoc />
    public TokenizerSpec Spec => new(Kind, _characters);

    /// <inheritdoc />
    /// <exception cref="ArgumentException">
    /// <paramref name="text"/> has a character that is not in the vocabulary; the message names it and its position.
    /// </exception>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new int[text.Length];
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            int id = c < _ids.Length ? _ids[c] : -1;
            if (id < 0) throw UnknownCharacter(c, i);
            ids[i] = id;
        }
        return ids;
    }

    /// <inheritdoc />
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var text = new StringBuilder();
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)_characters.Length)
                throw new ArgumentOutOfRangeException(nameof(ids), id,
                    $"token id {id} is outside this char tokenizer's vocabulary 0..{_characters.Length - 1}: decode ids made by the same tokenizer (its Spec is saved with the checkpoint).");
            text.Append(_characters[id]);
        }
        return text.ToString();
    }

    private ArgumentException UnknownCharacter(char c, int position)
    {
        string known = Escape(_characters.Length <= MaxListed ? _characters : _characters[..MaxListed]);
        if (_characters.Length > MaxListed) known += "…";
        return new ArgumentException(
            $"character {Describe(c)} at position {position} is not in the tokenizer's vocabulary; it knows {_characters.Length} characters: \"{known}\". " +
            "Use only characters from the training text, or train with --tokenizer gpt2.",
            "text");
    }

    /// <summary>A character as a message shows it: <c>'a'</c>, <c>'\t' (U+0009)</c>, <c>'é' (U+00E9)</c>, <c>U+0001</c>.</summary>
    internal static string Describe(char c)
    {
        string code = $"U+{(int)c:X4}";
        string escaped = Escape(c);
        if (escaped.StartsWith("U+", StringComparison.Ordinal)) return code;
        return c is >= ' ' and <= '~' ? $"'{escaped}'" : $"'{escaped}' ({code})";
    }

    private static string Escape(string s)
    {
        var b = new StringBuilder(s.Length);
        foreach (char c in s) b.Append(Escape(c) is var e && e.StartsWith("U+", StringComparison.Ordinal) ? $"\\u{(int)c:X4}" : e);
        return b.ToString();
    }

    // Control, format, surrogate and other invisible chars are written as escapes; '\\' and '"' stay as they are.
    private static string Escape(char c) => c switch
    {
        '\t' => "\\t",
        '\n' => "\\n",
        '\r' => "\\r",
        '\0' => "\\0",
        _ => char.GetUnicodeCategory(c) is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
            or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned or UnicodeCategory.LineSeparator
            or UnicodeCategory.ParagraphSeparator || (char.IsWhiteSpace(c) && c != ' ')
            ? $"U+{(int)c:X4}"
            : c.ToString(),
    };
}

using PipeSharp.Data;

namespace PipeSharp.Cli.Commands;

/// <summary>
/// The "text" of the sorting task: each digit 0..digits-1 is one token. Encoding skips spaces and commas between
/// digits ("2 0 1 1 0 2" and "201102" are the same prompt); decoding joins the digits with <paramref name="separator"/>.
/// </summary>
internal sealed class DigitTokenizer(int digits, string separator) : ITokenizer
{
    public string Kind => "digits";

    public int VocabularySize => digits;

    public TokenizerSpec Spec => new(Kind);

    public int[] Encode(string text)
    {
        var ids = new List<int>();
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsWhiteSpace(c) || c == ',') continue;
            if (c < '0' || c >= '0' + digits)
                throw new ArgumentException(
                    $"character '{c}' at position {i} is not a digit of the sorting task: the model knows the digits " +
                    $"0 to {digits - 1}, e.g. --prompt \"2 0 1 1 0 2\".");
            ids.Add(c - '0');
        }
        return [.. ids];
    }

    public string Decode(IEnumerable<int> ids) => string.Join(separator, ids.Select(id => (char)('0' + id)));

    /// <summary>Digits separated as in <paramref name="prompt"/>: with spaces if it had any separator, else none.</summary>
    public static DigitTokenizer For(int digits, string prompt)
    {
        if (digits > 10) throw new ArgumentException($"the sorting task of this checkpoint has {digits} digits; prompts can only write 0-9.");
        return new DigitTokenizer(digits, prompt.Any(c => char.IsWhiteSpace(c) || c == ',') ? " " : "");
    }
}

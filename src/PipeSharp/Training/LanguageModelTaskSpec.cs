using PipeSharp.Data;

namespace PipeSharp.Training;

/// <summary>
/// Which task a language model was trained on, as stored in its checkpoints, so that a resumed run can check it
/// and generation knows how to read and write text.
/// </summary>
/// <param name="Kind"><c>text</c> (a data file) or <c>sorting</c> (the built-in task).</param>
/// <param name="DataFile">The data file's path (text only).</param>
/// <param name="SortLength">Digits per sorting problem (sorting only).</param>
/// <param name="SortDigits">Distinct digits (sorting only).</param>
public sealed record LanguageModelTaskSpec(string Kind, string? DataFile = null, int SortLength = 6, int SortDigits = 3)
{
    /// <summary>The task for a data file.</summary>
    public static LanguageModelTaskSpec Text(string path) => new("text", Path.GetFullPath(path));

    /// <summary>The built-in sorting task.</summary>
    public static LanguageModelTaskSpec Sorting(int length = 6, int digits = 3) => new("sorting", null, length, digits);

    /// <summary>Builds the task: loads and tokenises the data file, or makes the sorting problems.</summary>
    /// <param name="tokenizer">For text: the tokenizer to use (e.g. a checkpoint's), else one of kind <paramref name="tokenizerKind"/> is built.</param>
    /// <param name="tokenizerKind"><c>char</c> or <c>gpt2</c>.</param>
    public ILanguageModelTask Create(ITokenizer? tokenizer = null, string tokenizerKind = Tokenizers.CharKind) => Kind switch
    {
        "text" => new CorpusTask(TextCorpus.Load(DataFile ?? throw new ArgumentException("a text task needs a data file.", nameof(DataFile)), tokenizer, tokenizerKind)),
        "sorting" => new SortingLanguageTask(new SortingTask(SortLength, SortDigits)),
        _ => throw new ArgumentException($"unknown task kind '{Kind}': use text or sorting.", nameof(Kind)),
    };
}

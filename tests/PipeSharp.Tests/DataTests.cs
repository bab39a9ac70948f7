using System.Text;
using System.Text.Json;
using PipeSharp.Data;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>Tokenizers, the text corpus and the sorting task that feed the GPT (issue 4).</summary>
public class DataTests
{
    // ---- char tokenizer ----

    [Fact]
    public void Char_tokenizer_round_trips_Shakespeare_with_65_characters()
    {
        string text = Shakespeare();
        var tokenizer = CharTokenizer.Train(text);
        Assert.Equal(65, tokenizer.VocabularySize);
        Assert.Equal("char", tokenizer.Kind);
        Assert.StartsWith("\n !$&',-.3:;?ABC", tokenizer.Characters);
        int[] ids = tokenizer.Encode(text);
        Assert.Equal(text.Length, ids.Length);
        Assert.All(ids, id => Assert.InRange(id, 0, 64));
        Assert.Equal(text, tokenizer.Decode(ids));
    }

    [Fact]
    public void Char_vocabulary_is_the_sorted_distinct_characters()
    {
        var tokenizer = CharTokenizer.Train("hello world");
        Assert.Equal(" dehlorw", tokenizer.Characters);
        Assert.Equal([3, 2, 4, 4, 5], tokenizer.Encode("hello"));
    }

    [Fact]
    public void Unknown_character_in_a_prompt_names_it_its_position_and_the_fix()
    {
        var tokenizer = CharTokenizer.Train(Shakespeare());
        var e = Assert.Throws<ArgumentException>(() => tokenizer.Encode("Hello\tworld"));
        Assert.Equal("text", e.ParamName);
        Assert.Contains(@"character '\t' (U+0009) at position 5", e.Message);
        Assert.Contains("65 characters", e.Message);
        Assert.Contains(@"""\n !$&',-.3:;?ABC", e.Message);
        Assert.Contains("use only characters from the training text, or train with --tokenizer gpt2", e.Message, StringComparison.OrdinalIgnoreCase);

        e = Assert.Throws<ArgumentException>(() => tokenizer.Encode("café"));
        Assert.Contains("character 'é' (U+00E9) at position 3", e.Message);

        e = Assert.Throws<ArgumentException>(() => tokenizer.Encode("a\u0001"));
        Assert.Contains("character U+0001 at position 1", e.Message);
    }

    [Fact]
    public void Char_decode_of_an_id_out_of_range_throws()
    {
        var tokenizer = CharTokenizer.Train("abc");
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([0, 3]));
        Assert.Equal("ids", e.ParamName);
        Assert.Contains("token id 3 is outside", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([-1]));
    }

    // ---- specs and the factory ----

    [Fact]
    public void Specs_survive_JSON_and_rebuild_the_same_tokenizer()
    {
        var original = Tokenizers.Create("char", "the quick\nbrown fox\t\"jumps\"");
        string json = JsonSerializer.Serialize(original.Spec);
        var spec = JsonSerializer.Deserialize<TokenizerSpec>(json)!;
        Assert.Equal(original.Spec, spec);
        var rebuilt = Tokenizers.FromSpec(spec);
        Assert.Equal("char", rebuilt.Kind);
        Assert.Equal(original.Encode("brown fox"), rebuilt.Encode("brown fox"));

        string gptJson = JsonSerializer.Serialize(Tokenizers.Create("gpt2", null).Spec);
        Assert.Equal("""{"Kind":"gpt2"}""", gptJson);
        var gpt2 = Tokenizers.FromSpec(JsonSerializer.Deserialize<TokenizerSpec>(gptJson)!);
        Assert.Equal(50257, gpt2.VocabularySize);
    }

    [Fact]
    public void Factory_errors_name_the_parameter_and_the_fix()
    {
        var e = Assert.Throws<ArgumentException>(() => Tokenizers.Create("bpe", "text"));
        Assert.Equal("kind", e.ParamName);
        Assert.Contains("use 'char' or 'gpt2'", e.Message);
        e = Assert.Throws<ArgumentException>(() => Tokenizers.Create("char", null));
        Assert.Equal("trainingText", e.ParamName);
        e = Assert.Throws<ArgumentException>(() => Tokenizers.FromSpec(new TokenizerSpec("char")));
        Assert.Equal("spec", e.ParamName);
        Assert.Throws<ArgumentException>(() => CharTokenizer.FromCharacters("abca"));
    }

    // ---- GPT-2 tokenizer ----

    [Fact]
    public void Gpt2_tokenizer_encodes_Hello_world_to_the_known_ids_offline()
    {
        var tokenizer = Tokenizers.Create("gpt2", null);
        Assert.Equal("gpt2", tokenizer.Kind);
        Assert.Equal(50257, tokenizer.VocabularySize);
        Assert.Equal([15496, 995], tokenizer.Encode("Hello world"));
        Assert.Equal("Hello world", tokenizer.Decode([15496, 995]));
        foreach (string text in new[] { Shakespeare()[..2000], "café\t🎉 naïve  \r\n", "<|endoftext|>" })
        {
            int[] ids = tokenizer.Encode(text);
            Assert.All(ids, id => Assert.InRange(id, 0, 50256));
            Assert.Equal(text, tokenizer.Decode(ids));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([50257]));
    }

    // ---- text corpus: bad files ----

    [Fact]
    public void Missing_file_names_the_path_and_the_fix()
    {
        string path = Path.Combine(Path.GetTempPath(), $"pipesharp-missing-{Guid.NewGuid():N}.txt");
        var e = Assert.Throws<FileNotFoundException>(() => TextCorpus.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("pass --data with an existing UTF-8 text file", e.Message);
        Assert.Equal(path, e.FileName);
    }

    [Fact]
    public void Empty_or_whitespace_file_is_refused()
    {
        using var empty = new TempFile([]);
        var e = Assert.Throws<ArgumentException>(() => TextCorpus.Load(empty.Path));
        Assert.Contains("is empty", e.Message);
        Assert.Contains(empty.Path, e.Message);

        using var blank = new TempFile(Encoding.UTF8.GetBytes(" \n\t \r\n"));
        e = Assert.Throws<ArgumentException>(() => TextCorpus.Load(blank.Path));
        Assert.Contains("only whitespace", e.Message);
    }

    [Fact]
    public void Invalid_UTF8_reports_the_byte_offset()
    {
        using var file = new TempFile([.. "abc"u8, 0xFF, .. "def"u8]);
        var e = Assert.Throws<InvalidDataException>(() => TextCorpus.Load(file.Path));
        Assert.Contains("not valid UTF-8 at byte offset 3", e.Message);
        Assert.Contains("0xFF", e.Message);
        Assert.Contains(file.Path, e.Message);

        // After a byte order mark and a valid two-byte character, a lone lead byte at offset 8.
        using var withBom = new TempFile([0xEF, 0xBB, 0xBF, .. "é ab"u8, 0xC3, 0x28, .. "xyz"u8]);
        e = Assert.Throws<InvalidDataException>(() => TextCorpus.Load(withBom.Path));
        Assert.Contains("at byte offset 8", e.Message);
    }

    [Fact]
    public void Byte_order_mark_is_not_a_token()
    {
        using var file = new TempFile([0xEF, 0xBB, 0xBF, .. "abcabc"u8]);
        var corpus = TextCorpus.Load(file.Path, validationFraction: 0.5);
        Assert.Equal(3, corpus.Tokenizer.VocabularySize);
        Assert.Equal(3, corpus.TrainTokens);
        Assert.Equal(3, corpus.ValidationTokens);
    }

    [Fact]
    public void Bad_options_are_refused_before_reading()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => TextCorpus.Load("nowhere.txt", validationFraction: 1));
        var e = Assert.Throws<ArgumentException>(() => TextCorpus.Load("nowhere.txt", tokenizerKind: "words"));
        Assert.Equal("tokenizerKind", e.ParamName);
    }

    // ---- text corpus: splits and batches ----

    [Fact]
    public void Shakespeare_loads_with_the_last_tenth_for_validation()
    {
        string path = ShakespearePath();
        var corpus = TextCorpus.Load(path);
        int length = Shakespeare().Length;
        Assert.Equal(65, corpus.Tokenizer.VocabularySize);
        Assert.Equal(length, corpus.TrainTokens + corpus.ValidationTokens);
        Assert.Equal(Math.Round(length * 0.1), corpus.ValidationTokens);
        Assert.Equal(Path.GetFullPath(path), corpus.Source);

        var (x, y) = corpus.Batch(CorpusSplit.Train, 0, 4, 64, seed: 1);
        using (x) using (y)
        {
            Assert.Equal([4L, 64L], x.shape);
            Assert.Equal(ScalarType.Int64, y.dtype);
        }
    }

    [Fact]
    public void Context_longer_than_the_validation_split_is_refused()
    {
        var corpus = TextCorpus.FromText(Repeat("abcdefghij", 1200)); // 120 validation tokens
        Assert.Equal(120, corpus.ValidationTokens);
        var e = Assert.Throws<ArgumentException>(() => corpus.Batch(CorpusSplit.Validation, 0, 2, 256, seed: 1));
        Assert.Equal("contextLength", e.ParamName);
        Assert.Contains("context length 256 is longer than the validation split (120 tokens", e.Message);
        Assert.Contains("use a shorter --context or more text", e.Message);
        Assert.Throws<ArgumentException>(() => corpus.CheckContextLength(120));
        corpus.CheckContextLength(119); // 120 tokens hold exactly one window of 119 + 1
        corpus.Batch(CorpusSplit.Validation, 0, 2, 119, seed: 1).Input.Dispose();
        corpus.Batch(CorpusSplit.Train, 0, 2, 256, seed: 1).Input.Dispose(); // the training split is long enough
    }

    [Fact]
    public void Batches_are_a_pure_function_of_seed_split_and_index()
    {
        var corpus = TextCorpus.FromText(Shakespeare()[..20000]);
        using var scope = NewDisposeScope();
        var (x1, y1) = corpus.Batch(CorpusSplit.Train, 7, 8, 32, seed: 42);
        corpus.Batch(CorpusSplit.Train, 3, 8, 32, seed: 42); // drawing other batches in between changes nothing
        var (x2, y2) = corpus.Batch(CorpusSplit.Train, 7, 8, 32, seed: 42);
        Assert.True(Same(x1, x2));
        Assert.True(Same(y1, y2));

        Assert.False(Same(x1, corpus.Batch(CorpusSplit.Train, 8, 8, 32, seed: 42).Input));
        Assert.False(Same(x1, corpus.Batch(CorpusSplit.Train, 7, 8, 32, seed: 43).Input));

        // A freshly loaded corpus gives the same batch (what resuming from a checkpoint relies on).
        var again = TextCorpus.FromText(Shakespeare()[..20000]);
        Assert.True(Same(x1, again.Batch(CorpusSplit.Train, 7, 8, 32, seed: 42).Input));
    }

    [Fact]
    public void Targets_are_the_inputs_shifted_by_one_from_a_real_window()
    {
        string text = Shakespeare()[..20000];
        var corpus = TextCorpus.FromText(text);
        using var scope = NewDisposeScope();
        var (x, y) = corpus.Batch(CorpusSplit.Train, 0, 6, 40, seed: 5);
        Assert.True(Same(x[.., 1..], y[.., ..^1]));
        for (int b = 0; b < 6; b++)
        {
            long[] row = x[b].data<long>().ToArray();
            string window = corpus.Tokenizer.Decode(row.Select(i => (int)i).Append((int)y[b, -1].item<long>()));
            Assert.Equal(41, window.Length);
            Assert.Contains(window, text[..corpus.TrainTokens]);
        }
    }

    [Fact]
    public void Train_and_validation_windows_come_from_their_own_ranges()
    {
        // The training part uses only 'a' and 'b', the last tenth only 'x' and 'y'.
        var corpus = TextCorpus.FromText(Repeat("ab", 900) + Repeat("xy", 100));
        var tokenizer = corpus.Tokenizer;
        Assert.Equal((900, 100), (corpus.TrainTokens, corpus.ValidationTokens));
        using var scope = NewDisposeScope();
        for (long k = 0; k < 5; k++)
        {
            var (tx, ty) = corpus.Batch(CorpusSplit.Train, k, 16, 50, seed: 3);
            Assert.All(tokenizer.Decode(Ids(tx)) + tokenizer.Decode(Ids(ty)), c => Assert.Contains(c, "ab"));
            var (vx, vy) = corpus.Batch(CorpusSplit.Validation, k, 16, 50, seed: 3);
            Assert.All(tokenizer.Decode(Ids(vx)) + tokenizer.Decode(Ids(vy)), c => Assert.Contains(c, "xy"));
        }
    }

    [Fact]
    public void Gpt2_corpus_loads_from_a_file()
    {
        using var file = new TempFile(Encoding.UTF8.GetBytes(Shakespeare()[..5000]));
        var corpus = TextCorpus.Load(file.Path, tokenizerKind: "gpt2");
        Assert.Equal("gpt2", corpus.Tokenizer.Kind);
        Assert.InRange(corpus.TrainTokens + corpus.ValidationTokens, 1000, 2500);
        var (x, y) = corpus.Batch(CorpusSplit.Validation, 0, 2, 16, seed: 0);
        using (x) using (y) Assert.InRange(x.max().item<long>(), 0, 50256);
    }

    // ---- sorting task ----

    [Fact]
    public void Sorting_batches_mask_the_prompt_and_target_the_sorted_digits()
    {
        var task = new SortingTask(length: 6, digits: 3);
        Assert.Equal((3, 11), (task.VocabularySize, task.ContextLength));
        using var scope = NewDisposeScope();
        var (x, y) = task.Batch(0, 32, seed: 1);
        Assert.Equal([32L, 11L], x.shape);
        for (int b = 0; b < 32; b++)
        {
            long[] input = x[b].data<long>().ToArray(), target = y[b].data<long>().ToArray();
            long[] sorted = input[..6].Order().ToArray();
            Assert.All(input[..6], d => Assert.InRange(d, 0, 2));
            Assert.Equal(sorted[..5], input[6..]);
            Assert.Equal(Enumerable.Repeat(-1L, 5), target[..5]);
            Assert.Equal(sorted, target[5..]);
        }
    }

    [Fact]
    public void Sorting_batches_are_reproducible_and_the_splits_are_disjoint()
    {
        var task = new SortingTask();
        using var scope = NewDisposeScope();
        Assert.True(Same(task.Batch(4, 16, 9).Input, task.Batch(4, 16, 9).Input));
        Assert.False(Same(task.Batch(4, 16, 9).Input, task.Batch(5, 16, 9).Input));

        HashSet<string> Prompts(CorpusSplit split)
        {
            var x = task.Batch(0, 2000, seed: 2, split).Input;
            return Enumerable.Range(0, 2000).Select(b => string.Concat(x[b, ..6].data<long>().ToArray())).ToHashSet();
        }
        var train = Prompts(CorpusSplit.Train);
        var validation = Prompts(CorpusSplit.Validation);
        Assert.Empty(train.Intersect(validation));
        Assert.InRange(validation.Count, 100, 729 / 2); // about a quarter of the 729 problems
        Assert.InRange(train.Count, 729 / 2, 729);
    }

    [Fact]
    public void Sorting_loss_ignores_the_prompt()
    {
        var task = new SortingTask();
        using var scope = NewDisposeScope();
        var (_, y) = task.Batch(0, 8, seed: 1);
        var uniform = zeros(8, 11, 3);
        Assert.Equal(Math.Log(3), SortingTask.Loss(uniform, y).item<float>(), 4);
        // Logits that are right on every answer position and wrong (very) on the prompt still give ~0 loss.
        var right = nn.functional.one_hot(y.clamp_min(0), 3).to(ScalarType.Float32) * 50;
        Assert.True(SortingTask.Loss(right, y).item<float>() < 1e-6);
    }

    [Fact]
    public void Accuracy_is_one_for_an_oracle_and_low_for_a_constant()
    {
        var task = new SortingTask(length: 6, digits: 3);
        Tensor Oracle(Tensor ids)
        {
            long b = ids.shape[0], t = ids.shape[1];
            var next = ids[.., ..6].sort(dim: 1).Values[.., t - 6];
            return nn.functional.one_hot(next, 3).to(ScalarType.Float32).unsqueeze(1).expand(b, t, 3);
        }
        Tensor Constant(Tensor ids) => zeros(ids.shape[0], ids.shape[1], 3).index_fill_(2, tensor(new long[] { 1 }), 1f);
        Assert.Equal(1.0, task.Accuracy(Oracle, problems: 200, seed: 3));
        Assert.True(task.Accuracy(Constant, problems: 200, seed: 3) < 0.05);
        Assert.Throws<ArgumentException>(() => task.Accuracy(ids => zeros(ids.shape[0], 3), 10, 3));
    }

    [Fact]
    public void Sorting_task_needs_two_digits_to_sort_from_two_values()
    {
        Assert.Equal("length", Assert.Throws<ArgumentOutOfRangeException>(() => new SortingTask(length: 1)).ParamName);
        Assert.Equal("digits", Assert.Throws<ArgumentOutOfRangeException>(() => new SortingTask(digits: 1)).ParamName);
        var smallest = new SortingTask(length: 2, digits: 2); // 4 problems, one held out
        using var x = smallest.Batch(0, 4, seed: 0, CorpusSplit.Validation).Input;
        using var first = x[0].expand_as(x);
        Assert.True(Same(x, first)); // so every validation row is that one problem
    }

    // ---- helpers ----

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    private static int[] Ids(Tensor t) => t.data<long>().Select(i => (int)i).ToArray();

    private static string Repeat(string unit, int length) =>
        string.Concat(Enumerable.Repeat(unit, length / unit.Length + 1))[..length];

    private static string? s_shakespeare;

    internal static string Shakespeare() => s_shakespeare ??= File.ReadAllText(ShakespearePath());

    /// <summary>
    /// The repository's corpus (<c>data/tinyshakespeare.txt</c>), which the build copies beside this test assembly;
    /// fails (not skips) if absent.
    /// </summary>
    internal static string ShakespearePath()
    {
        string path = Path.Combine(AppContext.BaseDirectory, "data", "tinyshakespeare.txt");
        if (!File.Exists(path))
            Assert.Fail($"the Shakespeare corpus is missing: expected {path}, copied there from the repository's data/tinyshakespeare.txt by the build.");
        return path;
    }

    private sealed class TempFile : IDisposable
    {
        public TempFile(byte[] bytes)
        {
            Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"pipesharp-data-{Guid.NewGuid():N}.txt");
            File.WriteAllBytes(Path, bytes);
        }

        public string Path { get; }

        public void Dispose() => File.Delete(Path);
    }
}

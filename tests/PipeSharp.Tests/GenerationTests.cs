using PipeSharp.Data;
using PipeSharp.Generation;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>Generation holds only the context window, hands over each token as it comes, and refuses counts it cannot hold.</summary>
public class GenerationTests
{
    // A "model" over a vocabulary of 5 whose most likely next token is the last one plus 1 (mod 5), recording the
    // lengths of the windows it was given.
    private static Func<Tensor, Tensor> Counting(List<long> windowLengths) => ids =>
    {
        windowLengths.Add(ids.shape[1]);
        long last = ids[0, -1].item<long>();
        var logits = zeros(1, ids.shape[1], 5);
        logits[0, -1, (last + 1) % 5] = tensor(10f);
        return logits;
    };

    [Fact]
    public void Generate_refuses_a_count_it_cannot_hold_before_computing_anything()
    {
        var windows = new List<long>();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            TextGenerator.Generate(Counting(windows), [1], int.MaxValue, 4, new TokenSampler(0, null, 0)));
        Assert.Equal("tokens", e.ParamName);
        Assert.Contains("TextGenerator.Stream", e.Message);
        Assert.Empty(windows);
    }

    [Fact]
    public void Stream_yields_each_token_as_it_comes_and_feeds_at_most_the_context()
    {
        var windows = new List<long>();
        var stream = TextGenerator.Stream(Counting(windows), [0, 1, 2, 3, 4, 0], long.MaxValue, 4, new TokenSampler(0, null, 0));
        Assert.Empty(windows); // nothing computed before the first token is asked for
        var first = stream.Take(12).ToList();
        Assert.Equal([1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2], first);
        Assert.Equal(12, windows.Count);
        Assert.All(windows, w => Assert.Equal(4, w));
        Assert.Equal(first, TextGenerator.Generate(Counting([]), [0, 1, 2, 3, 4, 0], 12, 4, new TokenSampler(0, null, 0)));
    }

    [Fact]
    public void Stream_refuses_bad_arguments_at_the_call()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => TextGenerator.Stream(Counting([]), [1], -1, 4, new TokenSampler(0, null, 0)));
        Assert.Throws<ArgumentOutOfRangeException>(() => TextGenerator.Stream(Counting([]), [1], 3, 0, new TokenSampler(0, null, 0)));
        Assert.Throws<ArgumentException>(() => TextGenerator.Stream(Counting([]), [], 3, 4, new TokenSampler(0, null, 0)));
    }

    [Theory]
    [InlineData("char")]
    [InlineData("gpt2")]
    public void Streamed_pieces_put_together_are_the_text_decoded_at_once(string kind)
    {
        const string text = "Héllo, wörld — naïve café 😀 ok\nnext line";
        var tokenizer = Tokenizers.Create(kind, text);
        var ids = tokenizer.Encode(text);
        if (kind == "gpt2")
        {
            // Split the emoji's bytes over several tokens, as a model may generate them.
            Assert.Contains(ids, id => tokenizer.Decode([id]).Contains('\uFFFD'));
        }
        var decoder = new StreamingDecoder(tokenizer);
        string streamed = decoder.Start(ids[..3]);
        foreach (int id in ids[3..])
        {
            string piece = decoder.Add(id);
            Assert.DoesNotContain('\uFFFD', piece);
            streamed += piece;
        }
        streamed += decoder.Flush();
        Assert.Equal(tokenizer.Decode(ids), streamed);
    }
}

using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Generation;

/// <summary>
/// Autoregressive generation with a language model given as a function from token ids [1, t] to logits [1, t, V]:
/// the whole model's forward, or a <see cref="Runtime.Pipeline"/>'s pipelined <see cref="Runtime.Pipeline.Forward"/>.
/// </summary>
public static class TextGenerator
{
    /// <summary>Extends <paramref name="prompt"/> by <paramref name="tokens"/> tokens.</summary>
    /// <param name="logits">Token ids [1, t] (int64) to logits [1, t, vocabulary].</param>
    /// <param name="prompt">The prompt's token ids; at least one.</param>
    /// <param name="tokens">How many tokens to generate.</param>
    /// <param name="contextLength">The model's context: only the last this-many tokens are fed.</param>
    /// <param name="sampler">Picks each next token.</param>
    /// <returns>The generated tokens (without the prompt).</returns>
    public static int[] Generate(Func<Tensor, Tensor> logits, IReadOnlyList<int> prompt, int tokens, int contextLength, TokenSampler sampler)
    {
        if (prompt.Count == 0) throw new ArgumentException("the prompt is empty: give at least one token (e.g. a newline).", nameof(prompt));
        if (tokens < 0) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "the number of tokens to generate must not be negative.");
        var sequence = new List<int>(prompt);
        var generated = new int[tokens];
        for (int n = 0; n < tokens; n++)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var window = sequence.Skip(Math.Max(0, sequence.Count - contextLength)).Select(t => (long)t).ToArray();
            var output = logits(tensor(window, dtype: ScalarType.Int64).unsqueeze(0));
            var last = output[0, -1].to(ScalarType.Float32).cpu().data<float>().ToArray();
            generated[n] = sampler.Next(last);
            sequence.Add(generated[n]);
        }
        return generated;
    }
}

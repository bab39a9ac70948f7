using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Generation;

/// <summary>
/// Autoregressive generation with a language model given as a function from token ids [1, t] to logits [1, t, V]:
/// the whole model's forward, or a <see cref="Runtime.Pipeline"/>'s pipelined <see cref="Runtime.Pipeline.Forward(TorchSharp.torch.Tensor, System.Threading.CancellationToken)"/>.
/// </summary>
public static class TextGenerator
{
    /// <summary>Extends <paramref name="prompt"/> by <paramref name="tokens"/> tokens, returned together.</summary>
    /// <param name="logits">Token ids [1, t] (int64) to logits [1, t, vocabulary].</param>
    /// <param name="prompt">The prompt's token ids; at least one.</param>
    /// <param name="tokens">How many tokens to generate: the array returned must fit in memory (see <see cref="Stream"/> for any count).</param>
    /// <param name="contextLength">The model's context: only the last this-many tokens are fed.</param>
    /// <param name="sampler">Picks each next token.</param>
    /// <returns>The generated tokens (without the prompt).</returns>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="tokens"/> is negative, or more than an array can hold or this machine's memory could take;
    /// refused before anything is allocated or computed.
    /// </exception>
    public static int[] Generate(Func<Tensor, Tensor> logits, IReadOnlyList<int> prompt, int tokens, int contextLength, TokenSampler sampler)
    {
        var stream = Stream(logits, prompt, tokens, contextLength, sampler); // checks the arguments
        long bytes = (long)tokens * sizeof(int);
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (tokens > Array.MaxLength || bytes > available / 2)
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens,
                $"{tokens} tokens would need {bytes / 1e9:F1} GB for the array Generate returns (this machine has {available / 1e9:F1} GB): " +
                "generate fewer, or use TextGenerator.Stream, which holds only the context window and hands over each token as it comes.");
        var generated = new int[tokens];
        int n = 0;
        foreach (int token in stream) generated[n++] = token;
        return generated;
    }

    /// <summary>
    /// Extends <paramref name="prompt"/> by up to <paramref name="tokens"/> tokens, each yielded as soon as it is
    /// picked. Only the last <paramref name="contextLength"/> tokens are kept, so memory does not grow with the count;
    /// stop early by leaving the enumeration.
    /// </summary>
    /// <param name="logits">Token ids [1, t] (int64) to logits [1, t, vocabulary].</param>
    /// <param name="prompt">The prompt's token ids; at least one.</param>
    /// <param name="tokens">How many tokens to generate.</param>
    /// <param name="contextLength">The model's context: only the last this-many tokens are fed.</param>
    /// <param name="sampler">Picks each next token.</param>
    /// <returns>The generated tokens (without the prompt), in order.</returns>
    /// <exception cref="ArgumentException">An argument is invalid; thrown by this call, before any token is generated.</exception>
    public static IEnumerable<int> Stream(Func<Tensor, Tensor> logits, IReadOnlyList<int> prompt, long tokens, int contextLength, TokenSampler sampler)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(sampler);
        if (prompt.Count == 0) throw new ArgumentException("the prompt is empty: give at least one token (e.g. a newline).", nameof(prompt));
        if (tokens < 0) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "the number of tokens to generate must not be negative.");
        if (contextLength < 1)
            throw new ArgumentOutOfRangeException(nameof(contextLength), contextLength, "the context length must be at least 1 (the model's context).");
        return Generating(logits, prompt, tokens, contextLength, sampler);
    }

    private static IEnumerable<int> Generating(Func<Tensor, Tensor> logits, IReadOnlyList<int> prompt, long tokens, int contextLength, TokenSampler sampler)
    {
        // The context window: the last contextLength tokens of the prompt and of what was generated.
        var window = new Queue<long>(Math.Min(prompt.Count, contextLength) + 1);
        foreach (int t in prompt.Skip(Math.Max(0, prompt.Count - contextLength))) window.Enqueue(t);
        for (long n = 0; n < tokens; n++)
        {
            int next;
            using (var scope = NewDisposeScope())
            using (var noGrad = no_grad())
            {
                var output = logits(tensor(window.ToArray(), dtype: ScalarType.Int64).unsqueeze(0));
                var last = output[0, -1].to(ScalarType.Float32).cpu().data<float>().ToArray();
                next = sampler.Next(last);
            }
            window.Enqueue(next);
            if (window.Count > contextLength) window.Dequeue();
            yield return next;
        }
    }
}

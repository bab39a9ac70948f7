namespace PipeSharp.Generation;

/// <summary>
/// Picks the next token from a row of logits: greedy at temperature 0, else softmax(logits / temperature) over the
/// top k, sampled with a seeded random stream. The arithmetic is done in double precision on the CPU and the draw
/// comes from <see cref="Random"/>, so the same seed picks the same token whenever the logits agree to float32
/// round-off, whichever way the model was split or threaded.
/// </summary>
public sealed class TokenSampler
{
    private readonly Random _random;
    private readonly double _temperature;
    private readonly int? _topK;

    /// <summary>Creates a sampler.</summary>
    /// <param name="temperature">0 for greedy decoding; higher is more random. Must not be negative.</param>
    /// <param name="topK">If set, only the k most likely tokens can be drawn.</param>
    /// <param name="seed">Seed of the random stream.</param>
    public TokenSampler(double temperature, int? topK, int seed)
    {
        if (temperature < 0 || double.IsNaN(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "temperature must be 0 (greedy) or positive.");
        if (topK is < 1)
            throw new ArgumentOutOfRangeException(nameof(topK), topK, "top-k must be at least 1, or unset for all tokens.");
        _temperature = temperature;
        _topK = topK;
        _random = new Random(seed);
    }

    /// <summary>The id of the next token.</summary>
    public int Next(ReadOnlySpan<float> logits)
    {
        if (logits.Length == 0) throw new ArgumentException("no logits to sample from.", nameof(logits));
        var order = Enumerable.Range(0, logits.Length).ToArray();
        var copy = logits.ToArray();
        // Most likely first; ties broken by the lower id, so the order never depends on sort stability.
        Array.Sort(order, (a, b) => copy[b].CompareTo(copy[a]) is var c && c != 0 ? c : a.CompareTo(b));
        double u = _random.NextDouble(); // drawn every time, so the stream stays aligned whatever the temperature
        if (_temperature == 0) return order[0];
        int k = Math.Min(_topK ?? logits.Length, logits.Length);
        double max = copy[order[0]];
        var weights = new double[k];
        double total = 0;
        for (int j = 0; j < k; j++) total += weights[j] = Math.Exp((copy[order[j]] - max) / _temperature);
        double target = u * total, running = 0;
        for (int j = 0; j < k; j++)
        {
            running += weights[j];
            if (target < running) return order[j];
        }
        return order[k - 1];
    }
}

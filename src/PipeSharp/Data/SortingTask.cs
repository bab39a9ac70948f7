using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Data;

/// <summary>
/// A data-free task for a <see cref="Models.Gpt"/>, as minGPT's sorting demo: the model reads <see cref="Length"/>
/// digits in [0, <see cref="Digits"/>) and must then write them sorted. A sequence is the unsorted digits followed
/// by the sorted ones; Input is all but its last token, Target all but its first, with the positions that are still
/// in the prompt set to -1 so that <see cref="Loss"/> ignores them. One problem in four (chosen by a hash of its
/// digits) is held out for validation, so the two splits never share a problem.
/// </summary>
public sealed class SortingTask
{
    /// <summary>The target id that <see cref="Loss"/> ignores (prompt positions).</summary>
    public const long IgnoreIndex = -1;

    private const long Salt = 0x5067A1D5;

    /// <summary>A task of sequences of <paramref name="length"/> digits in [0, <paramref name="digits"/>).</summary>
    /// <param name="length">Digits to sort; minGPT uses 6.</param>
    /// <param name="digits">Number of distinct digits (the vocabulary size); minGPT uses 3.</param>
    /// <exception cref="ArgumentException">The numbers give too few distinct problems to hold some out for validation.</exception>
    public SortingTask(int length = 6, int digits = 3)
    {
        if (length < 2) throw new ArgumentOutOfRangeException(nameof(length), length, "Sorting needs a sequence of at least two digits.");
        if (digits < 2) throw new ArgumentOutOfRangeException(nameof(digits), digits, "There must be at least two distinct digits.");
        Length = length;
        Digits = digits;
        // A small problem space could put every problem in one split (and Batch would then loop forever): check it.
        double problems = Math.Pow(digits, length);
        if (problems <= 1 << 16)
        {
            int validation = 0, count = (int)problems;
            var sequence = new int[length];
            for (int code = 0; code < count; code++)
            {
                for (int i = 0, c = code; i < length; i++, c /= digits) sequence[i] = c % digits;
                if (SplitOf(sequence) == CorpusSplit.Validation) validation++;
            }
            if (validation == 0 || validation == count)
                throw new ArgumentException(
                    $"{length} digits from 0..{digits - 1} give only {count} distinct problems, too few to hold out validation problems: use a longer sequence or more digits.",
                    nameof(length));
        }
    }

    /// <summary>Number of digits to sort.</summary>
    public int Length { get; }

    /// <summary>Number of distinct digits.</summary>
    public int Digits { get; }

    /// <summary>The model's vocabulary size: one token per digit.</summary>
    public int VocabularySize => Digits;

    /// <summary>The model's context length: 2 × <see cref="Length"/> − 1.</summary>
    public int ContextLength => 2 * Length - 1;

    /// <summary>
    /// <paramref name="batchSize"/> problems of <paramref name="split"/>: Input and Target, int64
    /// [batchSize, <see cref="ContextLength"/>]. The problems depend only on the arguments, so batch k is the same
    /// whenever it is drawn. The caller owns the tensors.
    /// </summary>
    public (Tensor Input, Tensor Target) Batch(long batchIndex, int batchSize, long seed, CorpusSplit split = CorpusSplit.Train)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "The batch size must be at least 1.");
        int t = ContextLength;
        var input = new long[(long)batchSize * t];
        var target = new long[input.Length];
        var random = StableRandom.For(seed, Salt + (long)split, batchIndex);
        var unsorted = new int[Length];
        var sequence = new int[2 * Length];
        for (int b = 0; b < batchSize; b++)
        {
            Draw(ref random, split, unsorted);
            unsorted.CopyTo(sequence, 0);
            unsorted.CopyTo(sequence, Length);
            Array.Sort(sequence, Length, Length);
            for (int i = 0; i < t; i++)
            {
                input[b * t + i] = sequence[i];
                target[b * t + i] = i < Length - 1 ? IgnoreIndex : sequence[i + 1];
            }
        }
        long[] shape = [batchSize, t];
        return (tensor(input, shape, ScalarType.Int64), tensor(target, shape, ScalarType.Int64));
    }

    /// <summary>Cross-entropy of logits [batch, time, vocabulary] against targets [batch, time], ignoring targets of -1.</summary>
    public static Tensor Loss(Tensor logits, Tensor targets) =>
        nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), targets.reshape(-1), ignore_index: IgnoreIndex);

    /// <summary>
    /// The fraction of <paramref name="problems"/> validation problems the model sorts exactly, decoding greedily:
    /// from the unsorted prompt, append the argmax of the last position's logits, <see cref="Length"/> times.
    /// </summary>
    /// <param name="predictLogits">Token ids [batch, t] to logits [batch, t, vocabulary], e.g. the model in eval mode.</param>
    /// <param name="problems">Number of validation problems to try.</param>
    /// <param name="seed">Chooses the problems.</param>
    public double Accuracy(Func<Tensor, Tensor> predictLogits, int problems, long seed)
    {
        ArgumentNullException.ThrowIfNull(predictLogits);
        if (problems < 1) throw new ArgumentOutOfRangeException(nameof(problems), problems, "Try at least one problem.");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (input, _) = Batch(0, problems, seed, CorpusSplit.Validation);
        var prompt = input[.., ..Length];
        var expected = input[.., ..Length].sort(dim: 1).Values;
        var sequence = prompt;
        for (int i = 0; i < Length; i++)
        {
            var logits = predictLogits(sequence);
            if (logits.dim() != 3 || logits.shape[0] != problems || logits.shape[1] != sequence.shape[1])
                throw new ArgumentException(
                    $"predictLogits returned shape [{string.Join(", ", logits.shape)}] for input [{problems}, {sequence.shape[1]}]: it must return logits [batch, time, vocabulary].",
                    nameof(predictLogits));
            var next = logits[.., -1, ..].argmax(-1).unsqueeze(1).to(ScalarType.Int64);
            sequence = cat([sequence, next], 1);
        }
        var solved = sequence[.., Length..].eq(expected).all(1);
        return solved.to(ScalarType.Float64).mean().item<double>();
    }

    // Draws digit sequences until one belongs to the split.
    private void Draw(ref StableRandom random, CorpusSplit split, int[] sequence)
    {
        do
            for (int i = 0; i < sequence.Length; i++) sequence[i] = (int)random.NextBelow(Digits);
        while (SplitOf(sequence) != split);
    }

    private static CorpusSplit SplitOf(int[] sequence)
    {
        ulong h = 0xC0FFEE;
        foreach (int d in sequence) h = StableRandom.Mix(h + (ulong)d);
        return h % 4 == 0 ? CorpusSplit.Validation : CorpusSplit.Train;
    }
}

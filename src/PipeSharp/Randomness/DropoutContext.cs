namespace PipeSharp.Randomness;

/// <summary>
/// What keys the dropout masks of the forwards run on this thread: the seed, the training step and the index in the
/// whole batch of the first sample of the tensors that pass (a pipeline sets it around every forward action; ranks
/// are threads, so it is per thread). A <see cref="KeyedDropout"/> in training mode draws the mask of sample
/// <c>j</c> from a generator keyed by (seed, step, its layer, its index in the layer, first sample + j), so the masks
/// of a sample do not depend on the micro-batch, stage, rank or schedule that runs it.
/// </summary>
/// <example>
/// A single-device reference of step <c>k</c> of a pipeline with <c>DropoutSeed = 7</c>, on the whole batch:
/// <code>
/// using (DropoutContext.Enter(seed: 7, step: k, firstSample: 0)) loss = lossFunction(model.call(input), target);
/// </code>
/// </example>
public static class DropoutContext
{
    [ThreadStatic] private static Keys? _current;

    /// <summary>The keys of the forwards on this thread, until the returned object is disposed (then the previous ones).</summary>
    /// <param name="seed">The run's seed (<c>PipelineOptions.DropoutSeed</c> in a pipeline).</param>
    /// <param name="step">The training step, counted from 0 (<c>Pipeline.TrainingSteps</c> before the step).</param>
    /// <param name="firstSample">The index in the whole batch of sample 0 of the tensors that pass (0 for the whole batch).</param>
    public static IDisposable Enter(long seed, long step, long firstSample)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step), step, "the step is counted from 0.");
        if (firstSample < 0) throw new ArgumentOutOfRangeException(nameof(firstSample), firstSample, "the first sample index is counted from 0.");
        var previous = _current;
        _current = new Keys(seed, step, firstSample);
        return new Restore(previous);
    }

    /// <summary>The keys set on this thread, or null.</summary>
    internal static Keys? Current => _current;

    internal sealed record Keys(long Seed, long Step, long FirstSample);

    private sealed class Restore(Keys? previous) : IDisposable
    {
        private bool _done;

        public void Dispose()
        {
            if (_done) return;
            _done = true;
            _current = previous;
        }
    }
}

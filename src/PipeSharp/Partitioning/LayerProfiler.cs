using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Partitioning;

/// <summary>
/// Measures how long each layer takes to run forward and backward on a sample micro-batch, on the current thread and
/// device: the cost to balance stages by when layers differ in compute more than in parameters (attention over long
/// sequences, a large vocabulary head, convolutions on large images).
/// </summary>
internal static class LayerProfiler
{
    /// <summary>Seconds of forward plus backward per layer (the fastest of <paramref name="repeats"/> runs).</summary>
    /// <param name="layers">The model's layers, in order; each on the device <paramref name="sample"/> is on.</param>
    /// <param name="sample">An input of one micro-batch for the first layer.</param>
    /// <param name="repeats">Runs per layer; the fastest counts (the first run also warms caches up).</param>
    /// <param name="minSeconds">Go on past <paramref name="repeats"/> runs (up to 50) until this much time has passed: short layers need more runs.</param>
    public static double[] ForwardBackwardSeconds(IReadOnlyList<nn.Module<Tensor, Tensor>> layers, Tensor sample, int repeats = 3, double minSeconds = 0)
    {
        if (repeats < 1) throw new ArgumentOutOfRangeException(nameof(repeats), repeats, "profile each layer at least once.");
        var best = Enumerable.Repeat(double.PositiveInfinity, layers.Count).ToArray();
        long start = Stopwatch.GetTimestamp();
        for (int r = 0; r < repeats || (r < 50 && Stopwatch.GetElapsedTime(start).TotalSeconds < minSeconds); r++)
        {
            using var scope = NewDisposeScope();
            // Each layer gets a leaf input, so its backward can be timed on its own.
            var inputs = new Tensor[layers.Count];
            var outputs = new Tensor[layers.Count];
            var times = new double[layers.Count];
            Tensor x = sample;
            for (int i = 0; i < layers.Count; i++)
            {
                inputs[i] = x.is_floating_point() ? x.detach().requires_grad_(true) : x;
                long t0 = Stopwatch.GetTimestamp();
                outputs[i] = layers[i].call(inputs[i]);
                times[i] = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                x = outputs[i];
            }
            Tensor grad = ones_like(outputs[^1]);
            for (int i = layers.Count - 1; i >= 0; i--)
            {
                long t0 = Stopwatch.GetTimestamp();
                if (outputs[i].requires_grad) outputs[i].backward([grad]);
                times[i] += Stopwatch.GetElapsedTime(t0).TotalSeconds;
                grad = inputs[i].requires_grad && inputs[i].grad is { } g ? g : zeros_like(inputs[i]);
            }
            for (int i = 0; i < layers.Count; i++) best[i] = Math.Min(best[i], times[i]);
            foreach (var layer in layers) layer.zero_grad();
        }
        return best;
    }

    /// <summary>
    /// What the balance modes <see cref="BalanceMode.Time"/> and <see cref="BalanceMode.Auto"/> measure of each layer on
    /// one micro-batch: seconds of forward plus backward (the fastest of at least 5 runs and 0.2 s), the bytes its
    /// forward keeps for the backward (the native heap's growth over the forward, at least its output) and its output's
    /// bytes. The one place the partitioner's measurements come from: a better profiler replaces this function.
    /// </summary>
    /// <param name="layers">The model's layers, in order.</param>
    /// <param name="sample">One micro-batch for the first layer.</param>
    /// <param name="threads">Intra-op threads to measure with (a rank's), put back afterwards.</param>
    public static LayerMeasurement Measure(IReadOnlyList<nn.Module<Tensor, Tensor>> layers, Tensor sample, int threads)
    {
        int before = get_num_threads();
        set_num_threads(threads);
        try
        {
            return MeasureHere(layers, sample);
        }
        finally
        {
            set_num_threads(before);
        }
    }

    private static LayerMeasurement MeasureHere(IReadOnlyList<nn.Module<Tensor, Tensor>> layers, Tensor sample)
    {
        // The fastest of at least 5 runs and 0.2 s: a rank's time is its layers' undisturbed time, and a short
        // measurement on a loaded machine is mostly disturbance.
        var seconds = ForwardBackwardSeconds(layers, sample, repeats: 5, minSeconds: 0.2);
        var kept = new long[layers.Count];
        var output = new long[layers.Count];
        using (var scope = NewDisposeScope())
        {
            Tensor x = sample;
            for (int i = 0; i < layers.Count; i++)
            {
                var input = x.is_floating_point() ? x.detach().requires_grad_(true) : x;
                long? before = Tracing.NativeHeap.BytesInUse();
                x = layers[i].call(input);
                long? after = Tracing.NativeHeap.BytesInUse();
                output[i] = x.numel() * x.element_size();
                kept[i] = Math.Max(output[i], before is { } b && after is { } a ? a - b : 0);
            }
        }
        foreach (var layer in layers) layer.zero_grad();
        return new LayerMeasurement(seconds, kept, output);
    }

    /// <summary>
    /// A balance of <paramref name="layers"/> into <paramref name="stages"/> stages by measured forward + backward time
    /// on <paramref name="sample"/> (one micro-batch), minimising the slowest stage.
    /// </summary>
    public static IReadOnlyList<int> BalanceByTime(IReadOnlyList<nn.Module<Tensor, Tensor>> layers, Tensor sample, int stages, int repeats = 3)
    {
        Balance.CheckStageCount(stages, layers.Count);
        return Balance.ByCost(ForwardBackwardSeconds(layers, sample, repeats), stages);
    }
}

/// <summary>Per layer, on one micro-batch: seconds of forward + backward, bytes kept for the backward, output bytes.</summary>
internal sealed record LayerMeasurement(double[] Seconds, long[] ActivationBytes, long[] OutputBytes);

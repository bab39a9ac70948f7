using PipeSharp.Memory;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using static TorchSharp.torch;

namespace PipeSharp.Planning;

/// <summary>
/// Measures a model layer by layer through the runtime itself: every layer is a stage of its own, all on one rank
/// with the threads asked for, and a step of two micro-batches runs micro-batch 0 with a full backward (B) and
/// micro-batch 1 with a split one (I, then W), so every action is timed as a pipeline runs it (the last stage's
/// forward with the loss). The per-layer figure is the median over the measured steps (after one warm-up step). Each
/// stage's optimizer time is its busy time less its actions (the optimizer steps with its own learning rate: the
/// caller keeps the model's values if it must), and the step's time outside its actions is kept whole (the optimizer
/// with the gradient norm, the zeroing of the gradients and the freeing of the step's temporaries); activation bytes come from the pipeline's own memory measurement
/// (<see cref="Pipeline.MeasureMemory"/>).
/// </summary>
internal static class ProfileRun
{
    public static ModelProfile Measure(Func<PipelineOptions, Pipeline> create, int layerCount, Tensor input, Tensor target,
        string device, int threads, int repeats, string key)
    {
        if (repeats < 1) throw new ArgumentOutOfRangeException(nameof(repeats), repeats, "profile with at least 1 measured step.");
        using var rng = get_rng_state();
        try
        {
            using var profiled = new ProfiledStep(create, layerCount, input, target, device, threads);
            var pipe = profiled.Pipeline;
            var times = Enumerable.Range(0, 4).Select(_ => Enumerable.Range(0, layerCount).Select(_ => new List<double>()).ToArray()).ToArray();
            var optimizer = new List<double>();
            var beyond = new List<double>();
            var walls = new List<double>();
            for (int step = 0; step <= repeats; step++)
            {
                var stats = profiled.Run();
                if (step == 0) continue; // warm-up: allocator and kernels
                var actions = new double[layerCount];
                foreach (var t in stats.Timeline)
                {
                    times[(int)t.Action.Kind][t.Action.Stage].Add(t.End - t.Start);
                    actions[t.Action.Stage] += t.End - t.Start;
                }
                optimizer.Add(Enumerable.Range(0, layerCount).Sum(s => Math.Max(0, stats.StageBusySeconds[s] - actions[s])));
                beyond.Add(stats.WallSeconds - (stats.Timeline.Max(t => t.End) - stats.Timeline.Min(t => t.Start)));
                walls.Add(stats.WallSeconds);
            }
            var memory = pipe.MeasureMemory(profiled.Batch);
            var outputs = OutputBytes(pipe, input);
            (double factor, _) = OptimizerStateSize.Of(pipe.LocalStages.First().Optimizer);
            var layers = Enumerable.Range(0, layerCount).Select(l => new LayerCost(
                Median(times[(int)ActionKind.Forward][l]),
                Median(times[(int)ActionKind.Backward][l]),
                Median(times[(int)ActionKind.InputGrad][l]),
                Median(times[(int)ActionKind.WeightGrad][l]),
                memory[l].ActivationBytesPerMicroBatch ?? 0,
                outputs[l],
                memory[l].ParameterBytes,
                (long)Math.Round(memory[l].ParameterBytes * factor))).ToList();
            return new ModelProfile(key, device, threads, (int)input.shape[0], layers)
            {
                InputBytes = input.numel() * input.element_size(),
                OptimizerSeconds = Median(optimizer),
                BeyondActionsSeconds = Median(beyond),
                StepSeconds = Median(walls),
            };
        }
        finally
        {
            set_rng_state(rng);
        }
    }

    /// <summary>
    /// The median wall time of the profiled step now: the same pipeline and step as <see cref="Measure"/>, one warm-up
    /// and <paramref name="steps"/> measured steps. Against <see cref="ModelProfile.StepSeconds"/> it tells how much
    /// slower or faster the machine runs the profile's work than when it was measured.
    /// </summary>
    public static double StepSecondsNow(Func<PipelineOptions, Pipeline> create, int layerCount, Tensor input, Tensor target,
        string device, int threads, int steps)
    {
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(steps), steps, "time at least 1 step.");
        using var rng = get_rng_state();
        try
        {
            using var profiled = new ProfiledStep(create, layerCount, input, target, device, threads);
            var walls = new List<double>();
            for (int step = 0; step <= steps; step++)
            {
                var stats = profiled.Run();
                if (step > 0) walls.Add(stats.WallSeconds);
            }
            return Median(walls);
        }
        finally
        {
            set_rng_state(rng);
        }
    }

    /// <summary>One rank holding every layer as a stage: micro-batch 0 forward then B, micro-batch 1 forward then I and W.</summary>
    internal static Schedule Schedule(int layers)
    {
        var actions = new List<PipelineAction>();
        for (int s = 0; s < layers; s++) actions.Add(PipelineAction.F(s, 0));
        for (int s = layers - 1; s >= 0; s--) actions.Add(PipelineAction.B(s, 0));
        for (int s = 0; s < layers; s++) actions.Add(PipelineAction.F(s, 1));
        for (int s = layers - 1; s >= 0; s--)
        {
            actions.Add(PipelineAction.I(s, 1));
            actions.Add(PipelineAction.W(s, 1));
        }
        return new Schedule("profile", layers, 2, new int[layers], [actions]);
    }

    // The bytes each layer's output takes for one micro-batch (a forward without the graph).
    private static long[] OutputBytes(Pipeline pipe, Tensor input)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var result = new long[pipe.Stages.Count];
        Tensor x = input;
        foreach (var stage in pipe.Stages)
        {
            x = stage.call(x.to(pipe.Devices[stage.Index]));
            result[stage.Index] = x.numel() * x.element_size();
        }
        return result;
    }

    internal static double Median(IReadOnlyList<double> values)
    {
        if (values.Count == 0) return 0;
        var sorted = values.Order().ToArray();
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}

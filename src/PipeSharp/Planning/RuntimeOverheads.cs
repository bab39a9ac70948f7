using PipeSharp.Runtime;
using PipeSharp.Schedules;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Planning;

/// <summary>
/// What the runtime adds to the work of the layers, measured once per device, thread count and processor: the
/// time of a step beyond its actions and optimizer step (<paramref name="StepSeconds"/>: splitting the batch, handing
/// the ranks their lists, the loss and gradient-norm exchange, the statistics), the time each action costs beyond its
/// layers' work (<paramref name="ActionSeconds"/>: the runner's bookkeeping, the leaves and scopes, the hand-over
/// between actions), and of that, the part inside an action's measured duration (<paramref name="InActionSeconds"/>),
/// which every profiled layer's figure includes once.
/// </summary>
/// <param name="Key">The cache key.</param>
/// <param name="StepSeconds">Fixed seconds per step.</param>
/// <param name="ActionSeconds">Seconds per action beyond its layers' work, between actions included.</param>
/// <param name="InActionSeconds">Seconds of a trivial action's measured duration.</param>
/// <param name="NormSecondsPerByte">Seconds per gradient byte of the global gradient norm every step computes (per rank, in parallel).</param>
/// <param name="AddSecondsPerByte">Seconds per byte of adding one gradient into another (the in-process sum over replicas).</param>
/// <param name="StepSecondsPerWorker">Fixed seconds per step for each worker beyond the first (waking and joining it, three times a step).</param>
/// <param name="HandOverSeconds">
/// Seconds from a rank's send until a waiting rank has the message, in one process: the waiting worker's wake-up, as
/// the runtime's message timings show it (a ping-pong of two busy threads sees less).
/// </param>
internal sealed record RuntimeOverheads(string Key, double StepSeconds, double ActionSeconds, double InActionSeconds,
    double NormSecondsPerByte, double AddSecondsPerByte, double StepSecondsPerWorker = 0, double HandOverSeconds = 0)
{
    /// <summary>None (for tests of the arithmetic).</summary>
    public static RuntimeOverheads None { get; } = new("none", 0, 0, 0, 0, 0);

    /// <summary>The fixed seconds of a step with <paramref name="workers"/> worker threads (ranks x replicas).</summary>
    public double StepSecondsFor(int workers) => StepSeconds + Math.Max(0, workers - 1) * StepSecondsPerWorker;

    public static string KeyOf(string device, int threads) =>
        "runtime-" + ProfileKey.Hash($"runtime overheads 2\ndevice {device}\nthreads {threads}\ncpu {ProfileKey.CpuModel()} x{Environment.ProcessorCount}\n");

    /// <summary>Measures them (a few hundred milliseconds), or reads them from <paramref name="cache"/>.</summary>
    public static RuntimeOverheads Measure(string device, int threads, ProfileCache? cache)
    {
        string key = KeyOf(device, threads);
        return cache is null ? Run(key, device, threads) : cache.GetOrMeasure(key, () => Run(key, device, threads), o => o.Key);
    }

    // Four tiny layers on one rank, each its own stage; steps of 2 and of 8 micro-batches: the step time less the
    // optimizer's is fitted as fixed + per action x actions.
    private static RuntimeOverheads Run(string key, string device, int threads)
    {
        const int layers = 4, width = 8;
        using var rng = get_rng_state();
        try
        {
            manual_seed(1);
            var model = Enumerable.Range(0, layers).Select(_ => (nn.Module<Tensor, Tensor>)nn.Linear(width, width)).ToList();
            var points = new List<(double Actions, double Seconds)>();
            var inAction = new List<double>();
            var beyondActions = new List<double>();
            foreach (int microBatches in new[] { 2, 8 })
            {
                string file = Path.Combine(Path.GetTempPath(), $"pipesharp-overheads-{Environment.ProcessId}-{Guid.NewGuid():N}.schedule");
                ScheduleFile.Save(Schedule(layers, microBatches), file);
                Pipeline pipe;
                try
                {
                    pipe = new Pipeline(model, new PipelineOptions
                    {
                        Balance = Enumerable.Repeat(1, layers).ToArray(), Schedule = file, MicroBatches = microBatches,
                        ThreadsPerRank = threads, Devices = [device],
                    }, (o, t) => nn.functional.mse_loss(o, t), ps => optim.SGD(ps, 0.0));
                }
                finally
                {
                    File.Delete(file);
                }
                using (pipe)
                using (var x = randn(microBatches, width))
                using (var y = randn(microBatches, width))
                {
                    var seconds = new List<double>();
                    for (int step = 0; step < 12; step++)
                    {
                        pipe.TrainStep(x, y);
                        if (step < 2) continue;
                        var stats = pipe.LastStep!;
                        double actions = stats.Timeline.Sum(t => t.End - t.Start);
                        double optimizer = Math.Max(0, stats.StageBusySeconds.Sum() - actions);
                        seconds.Add(stats.WallSeconds - optimizer);
                        inAction.AddRange(stats.Timeline.Select(t => t.End - t.Start));
                        if (microBatches == 8) beyondActions.Add(BeyondActions(stats, [0, 0, 0, 0]));
                    }
                    points.Add((layers * microBatches * 2, ProfileRun.Median(seconds)));
                }
            }
            var (perWorker, handOver) = TwoRanks(model, device, threads, ProfileRun.Median(beyondActions));
            foreach (var l in model) l.Dispose();
            double perAction = Math.Max(0, (points[1].Seconds - points[0].Seconds) / (points[1].Actions - points[0].Actions));
            double fixedPart = Math.Max(0, points[0].Seconds - perAction * points[0].Actions);
            var (norm, add) = GradientPasses(threads);
            return new RuntimeOverheads(key, fixedPart, perAction, Math.Min(perAction, ProfileRun.Median(inAction)), norm, add, perWorker, handOver);
        }
        finally
        {
            set_rng_state(rng);
        }
    }

    // The same layers on two ranks (gpipe, 8 micro-batches): what a second worker adds to the step beyond the actions,
    // and how long a message takes to reach a rank that waits for it.
    private static (double PerWorker, double HandOver) TwoRanks(List<nn.Module<Tensor, Tensor>> model, string device, int threads, double oneRank)
    {
        using var pipe = new Pipeline(model, new PipelineOptions { Balance = [2, 2], Schedule = "gpipe", MicroBatches = 8, ThreadsPerRank = threads, Devices = [device] },
            (o, t) => nn.functional.mse_loss(o, t), ps => optim.SGD(ps, 0.0));
        using var x = randn(8, 8);
        using var y = randn(8, 8);
        var beyond = new List<double>();
        var handOvers = new List<double>();
        for (int step = 0; step < 12; step++)
        {
            pipe.TrainStep(x, y);
            if (step < 2) continue;
            var stats = pipe.LastStep!;
            beyond.Add(BeyondActions(stats, [0, 1]));
            foreach (var m in stats.Messages)
            {
                // Only where the receiver was waiting: no action of its was running when the message was sent.
                bool waiting = !stats.Timeline.Any(t => t.Rank == m.ToRank && t.Start <= m.SendTime && t.End > m.SendTime);
                if (waiting && m.ReceiveTime >= m.SendTime) handOvers.Add(m.ReceiveTime - m.SendTime);
            }
        }
        return (Math.Max(0, ProfileRun.Median(beyond) - oneRank), ProfileRun.Median(handOvers));
    }

    // A step's time beyond its actions' span and its slowest rank's optimizer step.
    private static double BeyondActions(Tracing.StepStatistics stats, int[] stageToRank)
    {
        var actions = new double[stageToRank.Length];
        foreach (var t in stats.Timeline) actions[t.Action.Stage] += t.End - t.Start;
        var optimizer = new double[stageToRank.Max() + 1];
        for (int s = 0; s < stageToRank.Length; s++) optimizer[stageToRank[s]] += Math.Max(0, stats.StageBusySeconds[s] - actions[s]);
        double span = stats.Timeline.Max(t => t.End) - stats.Timeline.Min(t => t.Start);
        return stats.WallSeconds - span - optimizer.Max();
    }

    // Seconds per byte of a float32 norm and of an in-place add over a 16 MB gradient, on a thread with `threads`
    // intra-op threads (as a rank's worker runs them).
    private static (double Norm, double Add) GradientPasses(int threads)
    {
        (double, double) result = default;
        var thread = new Thread(() =>
        {
            set_num_threads(threads);
            using var a = zeros(4 << 20);
            using var b = ones(4 << 20);
            var norms = new List<double>();
            var adds = new List<double>();
            for (int r = 0; r < 6; r++)
            {
                long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
                using (var n = linalg.vector_norm(b)) n.item<float>();
                long t1 = System.Diagnostics.Stopwatch.GetTimestamp();
                a.add_(b);
                long t2 = System.Diagnostics.Stopwatch.GetTimestamp();
                if (r == 0) continue;
                norms.Add((t1 - t0) / (double)System.Diagnostics.Stopwatch.Frequency);
                adds.Add((t2 - t1) / (double)System.Diagnostics.Stopwatch.Frequency);
            }
            double bytes = 4.0 * (4 << 20);
            result = (ProfileRun.Median(norms) / bytes, ProfileRun.Median(adds) / bytes);
        });
        thread.Start();
        thread.Join();
        return result;
    }

    private static Schedule Schedule(int layers, int microBatches)
    {
        var actions = new List<PipelineAction>();
        for (int m = 0; m < microBatches; m++)
        {
            for (int s = 0; s < layers; s++) actions.Add(PipelineAction.F(s, m));
            for (int s = layers - 1; s >= 0; s--) actions.Add(PipelineAction.B(s, m));
        }
        return new Schedule("overheads", layers, microBatches, new int[layers], [actions]);
    }
}

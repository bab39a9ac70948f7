using PipeSharp.InProcess;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using PipeSharp.Tracing;
using PipeSharp.Transport;
using TorchSharp;

namespace PipeSharp.Bench;

/// <summary>
/// Where the 2-stage pipeline's time goes, against its ceiling. From <see cref="Pipeline.LastStep"/> every action of
/// (d) is split into waiting (it started before the message it needs was produced: until the producing action ended)
/// and compute (the rest). The same actions are timed in (e), with both threads running and with each thread alone.
/// The 1F1B schedule is then replayed with these times and free hand-offs, and (d) is compared with a GPipe run of
/// the same pipeline.
/// </summary>
internal static class Diagnostics
{
    private const int Steps = 8;

    public static void Run(PipelineVariant d, IndependentHalves e, Workload data, BenchOptions options, TextWriter log)
    {
        log.WriteLine($"diagnostics of (d) vs (e), {Steps} instrumented steps each, alternating (means, ms):");
        var schedule = d.Pipeline.Schedule;
        int p = schedule.StageCount, m = schedule.MicroBatchCount;

        // (d) and (e) alternate step by step, so that load from elsewhere hits both alike.
        var steps = new List<StepStatistics>();
        var together = Enumerable.Range(0, p).Select(_ => new HalfTimes()).ToArray();
        var alone = Enumerable.Range(0, p).Select(_ => new HalfTimes()).ToArray();
        var pairSteps = new List<double>();
        d.Run(1);
        e.Run(1);
        for (int k = 0; k < Steps; k++)
        {
            d.Run(1);
            steps.Add(d.Pipeline.LastStep!);
            e.Trace(1, together);
            for (int h = 0; h < p; h++) e.Trace(1, alone, only: h);
            pairSteps.Add(Time(() => e.Run(2)) / 2);
        }
        var split = steps.Select(SplitWaits).ToList();

        // Means throughout (ms): the time actually spent, so that the factors below multiply out exactly.
        double MeanCompute(int stage, ActionKind kind) =>
            split.SelectMany(x => x).Where(a => a.Action.Stage == stage && a.Action.Kind == kind).Average(a => a.Compute);
        double[] dOpt = Enumerable.Range(0, p).Select(s => steps.Average(x => OptimizerSeconds(x, s))).ToArray();
        double[] dCompute = Enumerable.Range(0, p).Select(s => split.Average(x => x.Where(a => a.Action.Stage == s).Sum(a => a.Compute)) + dOpt[s]).ToArray();
        double[] eCompute = together.Select(t => t.Total / Steps).ToArray();
        double dWall = steps.Average(x => x.WallSeconds);
        double pairStep = pairSteps.Average();

        log.WriteLine($"  {"",-34} {"F",6} {"B",6} {"opt",6} {"compute",8} {"waiting",8} {"wall",7}");
        for (int s = 0; s < p; s++)
        {
            double wait = split.Average(x => x.Where(a => a.Action.Stage == s).Sum(a => a.Wait));
            Row(log, $"(d) stage {s}", MeanCompute(s, ActionKind.Forward), MeanCompute(s, ActionKind.Backward), dOpt[s], dCompute[s], wait, s == 0 ? dWall : null);
        }
        for (int s = 0; s < p; s++)
            Row(log, $"(e) half {s}, both threads running", together[s].Forward.Average(), together[s].Backward.Average(), together[s].Optimizer.Average(),
                eCompute[s], 0, s == 0 ? pairStep : null);
        for (int s = 0; s < p; s++)
            Row(log, $"(e) half {s}, alone", alone[s].Forward.Average(), alone[s].Backward.Average(), alone[s].Optimizer.Average(), alone[s].Total / Steps, 0, null);
        log.WriteLine("  F, B per micro-batch; opt, compute (F + B + opt), waiting, wall per step. (d) from Pipeline.LastStep.Timeline:");
        log.WriteLine("  waiting = the part of a receiving action before the action it receives from had ended. (e) traced a step at a time.");
        log.WriteLine($"  contention: F+B of a micro-batch takes {Slowdown(together, alone, 0):F2}x (stage 0) and {Slowdown(together, alone, 1):F2}x (stage 1) " +
                      "as long in (e) with both threads running as alone");

        // Each (d) step replayed: the same actions with the same compute times, hand-offs free and instant.
        double replay = split.Zip(steps).Average(x =>
        {
            var compute = x.First.ToDictionary(a => a.Action, a => a.Compute);
            return Replay(schedule, a => compute[a], s => OptimizerSeconds(x.Second, s));
        });
        int busiest = Enumerable.Range(0, p).MaxBy(s => dCompute[s]);
        double ceiling = pairStep * (m + p - 1) / m;
        double bubbleAllowance = (double)(m + p - 1) / m;
        log.WriteLine($"  (d) step {Ms(dWall)}: its actions replayed with free hand-offs {Ms(replay)}; busiest stage ({busiest}) computes {Ms(dCompute[busiest])}. " +
                      $"(e) pair step {Ms(pairStep)}, busier thread computes {Ms(eCompute.Max())}; ceiling step {Ms(ceiling)}.");
        log.WriteLine($"  (d)/(e) = {ceiling / dWall:F3} = compute {eCompute.Max() / dCompute[busiest]:F3} (e's busier thread / d's busiest stage)" +
                      $" x schedule {dCompute[busiest] * bubbleAllowance / replay:F3} (busiest x {m + p - 1}/{m} / replay: fill, drain, dependency stalls)" +
                      $" x runtime {replay / dWall:F3} (replay / measured: hand-offs, dispatch)" +
                      $" x pair {pairStep / eCompute.Max():F3} ((e) step / its busier thread's compute)");

        // Hand-offs: a receiving action that had to wait vs one whose message was already there.
        foreach (var (stage, kind) in new[] { (1, ActionKind.Forward), (0, ActionKind.Backward) }.Where(x => x.Item1 < p))
        {
            var all = split.SelectMany(x => x).Where(a => a.Action.Stage == stage && a.Action.Kind == kind).ToList();
            var waited = all.Where(a => a.Wait > 0).Select(a => a.Compute).ToList();
            var ready = all.Where(a => a.Wait == 0).Select(a => a.Compute).ToList();
            log.WriteLine($"  {stage}{PipelineAction.Letter(kind)}: after waiting, message produced -> action done {Ms(Stats.Median(waited))} (n={waited.Count}); " +
                          $"message already there: {Ms(Stats.Median(ready))} (n={ready.Count})");
        }
        var (median, p99) = HandOffLatency(2000);
        log.WriteLine($"  InProcessTransport ping-pong between two idle threads: one-way hand-off median {median * 1e6:F0} us, p99 {p99 * 1e6:F0} us");

        if (options.Timeline)
            for (int r = 0; r < schedule.RankCount; r++)
                log.WriteLine($"  timeline rank {r}: " + string.Join(" ", split[^1].Where(a => a.Rank == r)
                    .Select(a => $"{a.Action}[{Ms(a.Start)}+{Ms(a.Wait)}w+{Ms(a.Compute)}]")));

        CompareSchedules(d, data, log);
        log.WriteLine();
    }

    /// <summary>
    /// (c) against (a), alternating step by step: the time of each TrainStep call, split into the stage's own work
    /// (forward, backward, optimizer: StageBusySeconds) and what the runtime adds around it.
    /// </summary>
    public static void SingleStage(PlainLoop a, PipelineVariant c, TextWriter log)
    {
        var plain = new List<double>();
        var call = new List<double>();
        var busy = new List<double>();
        var lag = new List<double>();
        var between = new List<double>();
        var tail = new List<double>();
        var outside = new List<double>();
        a.Prepare();
        a.Run(1);
        c.Run(1);
        for (int k = 0; k < 2 * Steps; k++)
        {
            plain.Add(Time(() => a.Run(1)));
            call.Add(Time(() => c.Run(1)));
            var last = c.Pipeline.LastStep!;
            var actions = last.Timeline.OrderBy(t => t.Start).ToList();
            busy.Add(last.StageBusySeconds[0]);
            lag.Add(actions[0].Start);
            between.Add(actions.Zip(actions.Skip(1), (x, y) => y.Start - x.End).Sum());
            tail.Add(last.WallSeconds - actions[^1].End - OptimizerSeconds(last, 0));
            outside.Add(call[^1] - last.WallSeconds);
        }
        double runtime = Stats.Median(call.Zip(busy, (x, y) => x - y));
        log.WriteLine($"diagnostics of (c) vs (a), {2 * Steps} steps each, alternating (medians, ms):");
        log.WriteLine($"  (a) step {Ms(Stats.Median(plain))}; (c) TrainStep call {Ms(Stats.Median(call))} = stage work (F + B + opt, on the worker) " +
                      $"{Ms(Stats.Median(busy))} + runtime {Ms(runtime)} ({runtime / Stats.Median(call):P1}: split, dispatch to the worker and back, twice)");
        log.WriteLine($"  runtime parts: before the first action (zero_grad, dispatch) {Ms(Stats.Median(lag))}, between actions {Ms(Stats.Median(between))}, " +
                      $"after the last (second dispatch, hand-back) {Ms(Stats.Median(tail))}, outside the step context (checks, split, statistics) {Ms(Stats.Median(outside))}");
        log.WriteLine($"  per-step c/a {Stats.Median(plain) / Stats.Median(call):F3}; stage work vs the plain step {Stats.Median(busy) / Stats.Median(plain):F3}");
        log.WriteLine();
    }

    /// <summary>(d) against the same pipeline with the GPipe schedule, alternating, to see what schedule slack is worth.</summary>
    private static void CompareSchedules(PipelineVariant d, Workload data, TextWriter log)
    {
        var o = d.Pipeline.Options;
        using var gpipe = new PipelineVariant("d'", "gpipe", data, o with { Schedule = "gpipe" });
        var oneF = new List<double>();
        var gp = new List<double>();
        for (int round = 0; round < 4; round++)
        {
            d.Run(1);
            oneF.Add(Time(() => d.Run(Steps)) / Steps);
            gpipe.Run(1);
            gp.Add(Time(() => gpipe.Run(Steps)) / Steps);
        }
        log.WriteLine($"  same pipeline, 4 alternating rounds of {Steps} steps: 1f1b {Ms(Stats.Median(oneF))} ms/step, gpipe {Ms(Stats.Median(gp))} ms/step " +
                      $"(gpipe/1f1b throughput {Stats.Median(oneF) / Stats.Median(gp):F3})");
    }

    private static void Row(TextWriter log, string label, double f, double b, double opt, double compute, double wait, double? wall) =>
        log.WriteLine($"  {label,-34} {Ms(f),6} {Ms(b),6} {Ms(opt),6} {Ms(compute),8} {Ms(wait),8} {(wall is { } w ? Ms(w) : ""),7}");

    /// <summary>A stage's optimizer step: its busy time minus its actions.</summary>
    private static double OptimizerSeconds(StepStatistics step, int stage) =>
        step.StageBusySeconds[stage] - step.Timeline.Where(t => t.Action.Stage == stage).Sum(t => t.End - t.Start);

    /// <summary>One-way latency of a message between two otherwise idle threads: half of each round trip.</summary>
    private static (double Median, double P99) HandOffLatency(int roundTrips)
    {
        using var transport = new InProcessTransport();
        using var token = torch.zeros(1);
        var echo = new Thread(() =>
        {
            for (int i = 0; i < roundTrips; i++)
                transport.Send(new MessageKey(MessageKind.Gradient, 0, i), transport.Receive(new MessageKey(MessageKind.Activation, 1, i), default));
        }) { IsBackground = true };
        echo.Start();
        var oneWay = new double[roundTrips];
        for (int i = 0; i < roundTrips; i++)
        {
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            transport.Send(new MessageKey(MessageKind.Activation, 1, i), token);
            transport.Receive(new MessageKey(MessageKind.Gradient, 0, i), default);
            oneWay[i] = System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalSeconds / 2;
        }
        echo.Join();
        Array.Sort(oneWay);
        return (oneWay[roundTrips / 2], oneWay[(int)(roundTrips * 0.99)]);
    }

    private readonly record struct ActionSplit(int Rank, PipelineAction Action, double Start, double Wait, double Compute);

    /// <summary>Splits every action into waiting for its message and computing.</summary>
    private static List<ActionSplit> SplitWaits(StepStatistics step)
    {
        var end = step.Timeline.ToDictionary(t => t.Action, t => t.End);
        var result = new List<ActionSplit>();
        foreach (var t in step.Timeline)
        {
            var a = t.Action;
            var producer = Producer(a, step.StageBusySeconds.Count);
            double wait = producer is { } pa && end.TryGetValue(pa, out double produced) ? Math.Clamp(produced - t.Start, 0, t.End - t.Start) : 0;
            result.Add(new ActionSplit(t.Rank, a, t.Start, wait, t.End - t.Start - wait));
        }
        return result;
    }

    private static double Slowdown(HalfTimes[] together, HalfTimes[] alone, int s) =>
        (together[s].Forward.Average() + together[s].Backward.Average()) / (alone[s].Forward.Average() + alone[s].Backward.Average());

    /// <summary>
    /// The step time of <paramref name="schedule"/> if every action took exactly the given time and hand-offs were
    /// free: each rank runs its actions in order, a forward waits for the previous stage's forward of the same
    /// micro-batch, a backward for the next stage's backward; then every stage steps its optimizer.
    /// </summary>
    public static double Replay(Schedule schedule, Func<PipelineAction, double> duration, Func<int, double> optimizer)
    {
        var done = new Dictionary<PipelineAction, double>();
        var next = new int[schedule.RankCount];
        var free = new double[schedule.RankCount];
        int remaining = schedule.RankActions.Sum(a => a.Count);
        while (remaining > 0)
        {
            bool progressed = false;
            for (int r = 0; r < schedule.RankCount; r++)
            {
                while (next[r] < schedule.RankActions[r].Count)
                {
                    var a = schedule.RankActions[r][next[r]];
                    if (a.Kind is not (ActionKind.Forward or ActionKind.Backward))
                        throw new NotSupportedException($"the replay handles F and B actions only, not {a}.");
                    double ready = free[r];
                    if (Producer(a, schedule.StageCount) is { } producer)
                    {
                        if (!done.TryGetValue(producer, out double produced)) break;
                        ready = Math.Max(ready, produced);
                    }
                    done[a] = free[r] = ready + duration(a);
                    next[r]++;
                    remaining--;
                    progressed = true;
                }
            }
            if (!progressed) throw new InvalidOperationException("the schedule deadlocks");
        }
        return Enumerable.Range(0, schedule.StageCount).Max(s => free[schedule.StageToRank[s]] + optimizer(s));
    }

    /// <summary>The action whose message <paramref name="a"/> receives, or null if it receives none.</summary>
    private static PipelineAction? Producer(PipelineAction a, int stageCount) => a.Kind == ActionKind.Forward
        ? (a.Stage > 0 ? PipelineAction.F(a.Stage - 1, a.MicroBatch) : null)
        : (a.Stage < stageCount - 1 ? PipelineAction.B(a.Stage + 1, a.MicroBatch) : null);

    private static double Time(Action a)
    {
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        a();
        return System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalSeconds;
    }

    private static string Ms(double seconds) => (seconds * 1000).ToString("F2");
}

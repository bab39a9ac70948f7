// Schedules under the real runtime, with actions of known duration, against the simulator's prediction.
// Usage: dotnet run -c Release --project bench/PipeSharp.Bench.Schedules [-- --unit-ms 20 --steps 3]
//        dotnet run -c Release --project bench/PipeSharp.Bench.Schedules -- --split-backward [--rounds 5 --steps 3]
using System.Globalization;
using PipeSharp.Bench.Schedules;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using PipeSharp.Tracing;
using TorchSharp;
using static TorchSharp.torch;

int unitMs = Arg("--unit-ms", 20), steps = Arg("--steps", 3);
if (args.Contains("--split-backward"))
{
    SplitBackward.Run(Arg("--rounds", 5), steps);
    return;
}
Console.WriteLine($"PipeSharp schedule benchmark: F = I = W = {unitMs} ms (sleeps), B = I + W; measured makespan = median of {steps} steps");
Console.WriteLine("A chunk of a two-chunk schedule (interleaved, zb-v) holds half the work, so its actions take half as long.");
Console.WriteLine("predicted: simulator with the nominal costs; calibrated: with the mean measured duration of each (stage, action kind).");
Console.WriteLine($"{"schedule",-12} {"p",2} {"m",3} {"predicted",10} {"calibrated",10} {"measured",10} {"error",7} {"idle/rank",10} {"sim idle",9}");

var idle = new Dictionary<(string, int, int), double>();
bool allWithin = true;
foreach (var (p, m) in new[] { (4, 8), (8, 16) })
{
    foreach (var name in ScheduleGenerators.Names)
    {
        int chunks = ScheduleGenerators.StagesPerRank(name, null);
        var schedule = ScheduleGenerators.Create(name, p, m);
        int chunkMs = unitMs / chunks;
        var predicted = ScheduleSimulator.Simulate(schedule, new ActionCosts(chunkMs, 2 * chunkMs, chunkMs, chunkMs));
        var layers = Enumerable.Range(0, p * chunks)
            .Select(_ => (nn.Module<Tensor, Tensor>)new TimedLayer(chunkMs, chunkMs, chunkMs)).Prepend(new ScaleLayer()).ToList();
        var balance = Enumerable.Repeat(1, p * chunks).ToArray();
        balance[0] = 2; // the scale layer rides with the first timed layer
        using var pipe = new Pipeline(layers, new PipelineOptions
        {
            Ranks = p, MicroBatches = m, Schedule = name, ThreadsPerRank = 1, Balance = balance,
        }, (o, t) => o.sum(), ps => optim.SGD(ps, 0.0));
        var makespans = new List<double>();
        var idles = new List<double>();
        var durations = new List<ActionTiming>();
        for (int k = 0; k <= steps; k++)
        {
            using var x = zeros(m, 1);
            pipe.TrainStep(x, x);
            if (k == 0) continue; // warm-up
            var t = pipe.LastStep!.Timeline;
            double span = (t.Max(a => a.End) - t.Min(a => a.Start)) * 1000;
            makespans.Add(span);
            durations.AddRange(t);
            idles.Add(p * span - t.Sum(a => (a.End - a.Start) * 1000));
        }
        // Calibrate per (stage, kind): stage 0 computes no input gradient, so its B and I are shorter.
        var mean = durations.GroupBy(a => (a.Action.Stage, a.Action.Kind))
            .ToDictionary(g => g.Key, g => g.Average(a => (a.End - a.Start) * 1000));
        var calibrated = ScheduleSimulator.Simulate(schedule, a => mean[(a.Stage, a.Kind)], communication: 0);
        double measured = Median(makespans), error = measured / calibrated.Makespan - 1;
        double idlePerRank = Median(idles) / p;
        idle[(name, p, m)] = idlePerRank;
        allWithin &= Math.Abs(error) <= 0.05;
        Console.WriteLine($"{name,-12} {p,2} {m,3} {predicted.Makespan,8:F0}ms {calibrated.Makespan,8:F1}ms {measured,8:F1}ms {error,7:+0.0%;-0.0%} {idlePerRank,8:F1}ms {calibrated.RankIdle.Average(),7:F1}ms");
    }
}
Console.WriteLine();
Console.WriteLine($"every measured makespan within 5% of the calibrated simulation: {(allWithin ? "PASS" : "FAIL")}");
foreach (var (p, m) in new[] { (4, 8), (8, 16) })
{
    double ratio = idle[("zb-h1", p, m)] / idle[("1f1b", p, m)];
    Console.WriteLine($"p={p} m={m}: ZB-H1 idle / 1F1B idle = {ratio:F2} (target <= 0.40, theory 0.33): {(ratio <= 0.4 ? "PASS" : "FAIL")}");
}

static double Median(List<double> xs) { var s = xs.Order().ToList(); return s[s.Count / 2]; }

int Arg(string name, int fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
}

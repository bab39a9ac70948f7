using System.Diagnostics;
using PipeSharp.Partitioning;

// How long StagePartitioner.Solve takes (the planner calls it thousands of times): random layer times, speeds and
// budgets, for placements of one stage per rank (1f1b), interleaved (2 per rank, round robin) and V (zb-v), averaged
// over repeated calls. Run: dotnet run --project bench/PipeSharp.Bench.Partition -c Release [-- --large]
// (--large adds 8 ranks x 2 stages on 32 layers: seconds per call, see docs/partitioning.md).
var random = new Random(1);
bool large = args.Contains("--large");
Console.WriteLine("placement     ranks  stages  layers   ms per Solve   ms per SolveWithin");
foreach (var (name, ranks, layers) in new[]
{
    ("1f1b", 2, 10), ("1f1b", 4, 32), ("1f1b", 8, 64), ("1f1b", 16, 128),
    ("interleaved", 2, 10), ("interleaved", 4, 32), ("interleaved", 8, 32),
    ("zb-v", 2, 10), ("zb-v", 4, 32), ("zb-v", 8, 32),
})
{
    if (ranks == 8 && name != "1f1b" && !large) continue;
    int[] placement = name switch
    {
        "interleaved" => Enumerable.Range(0, 2 * ranks).Select(s => s % ranks).ToArray(),
        "zb-v" => Enumerable.Range(0, 2 * ranks).Select(s => s < ranks ? s : 2 * ranks - 1 - s).ToArray(),
        _ => Enumerable.Range(0, ranks).ToArray(),
    };
    var seconds = Enumerable.Range(0, layers).Select(_ => 0.5 + random.NextDouble()).ToArray();
    var state = Enumerable.Range(0, layers).Select(_ => (long)random.Next(1_000_000, 2_000_000)).ToArray();
    long budget = state.Sum() * 2 / ranks;
    var problem = new PartitionProblem
    {
        LayerSeconds = seconds,
        StageToRank = placement,
        DeviceSpeeds = Enumerable.Range(0, ranks).Select(r => r == 0 ? 0.5 : 1.0).ToArray(),
        LayerStateBytes = state,
        LayerActivationBytes = state.Select(b => b / 10).ToArray(),
        LayerOutputBytes = state.Select(b => b / 100).ToArray(),
        StagePeakMicroBatches = placement.Select((r, s) => ranks - r).ToArray(),
        MemoryPerDevice = [budget],
        TransferSeconds = (_, _, bytes) => 1e-4 + bytes * 1e-9,
    };
    var parameters = state.Select(b => (double)b).ToArray();
    double Time(Action run)
    {
        run();
        int calls = 0;
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed.TotalSeconds < 0.5) { run(); calls++; }
        return clock.Elapsed.TotalMilliseconds / calls;
    }
    double solve = Time(() => StagePartitioner.Solve(problem));
    double within = Time(() => StagePartitioner.SolveWithin(problem, 0.05, parameters));
    Console.WriteLine($"{name,-12} {ranks,6} {placement.Length,7} {layers,7} {solve,14:0.000} {within,20:0.000}");
}

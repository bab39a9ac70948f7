using PipeSharp.Boundaries;
using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Verification;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Cli.Commands;

/// <summary>
/// The models of <c>verify --model unet|transformer</c>, whose stages pass several tensors: a U-Net-like model whose
/// skips cross stages, and a transformer whose stages pass hidden state and a padding mask (without gradient).
/// </summary>
internal static class BoundaryModelChecks
{
    public static readonly string[] Names = ["unet", "transformer"];

    private const int BatchSize = 16;

    private sealed record Spec(Func<TorchSharp.Modules.Sequential> Create, IReadOnlyList<string>? Inputs, Func<Generator, (TensorSet, Tensor)> Batch);

    private static Spec For(string name) => name switch
    {
        // 8 layers: down1..3, middle, up3..1, head.
        "unet" => new(() => { manual_seed(11); return UNetLike.Create(inputSize: 12, width: 16, depth: 3, classes: 5); }, null,
            g => (TensorSet.Of(randn([BatchSize, 12], generator: g)), randint(0, 5, [BatchSize], generator: g))),
        // 8 layers: embed, block0..5, head.
        "transformer" => new(() => { manual_seed(12); return MaskedTransformer.Create(vocabulary: 11, context: 8, width: 16, heads: 2, blocks: 6, classes: 3); },
            MaskedTransformer.Inputs, g => MaskedTransformer.Batch(g, BatchSize, 11, 8, 3)),
        _ => throw new ArgumentException($"Unknown model '{name}'. Use one of: {string.Join(", ", Names)}."),
    };

    /// <summary>Checks model <paramref name="name"/> in every case (Adam); prints one line per check; stops early on a signal.</summary>
    public static (int Checks, int Mismatches) Run(string name, IEnumerable<(string Schedule, int Ranks, int MicroBatches)> cases, int replicas,
        Mpi.MpiCluster? cluster, int steps, double tolerance, StopSignals signals)
    {
        var spec = For(name);
        var generator = new Generator(23);
        var batches = Enumerable.Range(0, steps).Select(_ => spec.Batch(generator)).ToList();
        int checks = 0, mismatches = 0;
        try
        {
            foreach (var (schedule, stages, microBatches) in cases)
            {
                var options = new PipelineOptions
                {
                    Ranks = stages, MicroBatches = microBatches, Schedule = schedule, ThreadsPerRank = 1, Replicas = replicas,
                    Backend = cluster, Stop = signals.Request, Inputs = spec.Inputs,
                };
                var (diff, _) = EquivalenceCheck.Compare(spec.Create, options, ps => optim.Adam(ps, 1e-3),
                    (output, target) => nn.functional.cross_entropy(output, target), batches);
                bool ok = diff <= tolerance;
                checks++;
                if (!ok) mismatches++;
                Console.WriteLine($"{name,-6} {"adam",-9} {schedule,-11} {stages,6} {microBatches,13} {diff,11:0.00e+00}  {(ok ? "ok" : "FAIL")}");
                if (signals.ExitCode is not null) break;
            }
        }
        finally
        {
            foreach (var (x, y) in batches)
            {
                foreach (var t in x.Values) t.Dispose();
                y.Dispose();
            }
        }
        return (checks, mismatches);
    }
}

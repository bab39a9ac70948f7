using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Cli.Commands;

/// <summary>
/// <c>--inject-failure R:S</c>, for testing failure handling: the pieces of pipeline rank R throw in their forward
/// during step S (1-based), as a real fault in a stage would. <c>R:S:checkpoint</c>: rank R fails while the checkpoint
/// of step S is being saved (the others are inside the save, waiting for it). <c>R:S:nan</c>: the first layer of
/// rank R's pieces outputs NaN during step S (a step whose loss and gradients are not finite).
/// </summary>
internal static class FailureInjection
{
    private static (int Rank, int Step, bool Checkpoint, bool NaN) Parse(string spec)
    {
        var parts = spec.Split(':');
        if (parts.Length is < 2 or > 3 || !int.TryParse(parts[0], out int rank) || !int.TryParse(parts[1], out int step)
            || (parts.Length == 3 && parts[2] is not ("checkpoint" or "nan")))
            throw new ArgumentException($"--inject-failure: '{spec}' is not R:S, R:S:checkpoint or R:S:nan (a rank and a step, e.g. 1:3).");
        return (rank, step, parts.Length == 3 && parts[2] == "checkpoint", parts.Length == 3 && parts[2] == "nan");
    }

    /// <summary>For R:S:checkpoint: throws if this process is rank R and <paramref name="step"/> is S.</summary>
    public static void BeforeCheckpoint(string? spec, Mpi.MpiCluster? cluster, int step)
    {
        if (spec is null) return;
        var (rank, at, checkpoint, _) = Parse(spec);
        if (checkpoint && at == step && (cluster?.Rank ?? 0) == rank)
            throw new IOException($"injected failure (--inject-failure {spec}) while saving the checkpoint of step {step}");
    }

    public static void Arm(string? spec, Pipeline pipe, Func<int> currentStep)
    {
        if (spec is null) return;
        var (rank, step, checkpoint, nan) = Parse(spec);
        if (checkpoint) return;
        int ranks = pipe.Schedule.RankCount;
        int? here = pipe.Options.Backend is { ProcessCount: > 1 } backend ? backend.ProcessIndex : null;
        foreach (var piece in pipe.Stages)
        {
            bool target = here is { } r ? r == rank : pipe.Schedule.StageToRank[piece.Index] == rank;
            if (!target) continue;
            var first = piece.children().OfType<nn.Module<Tensor, Tensor>>().First();
            if (nan)
            {
                first.register_forward_hook((_, _, output) => currentStep() == step ? output.mul(double.NaN) : output);
                continue;
            }
            first.register_forward_pre_hook((_, input) =>
            {
                if (currentStep() == step)
                    throw new InvalidOperationException($"injected failure (--inject-failure {spec}) in the forward of step {step}");
                return input;
            });
        }
    }
}

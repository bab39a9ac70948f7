using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Cli.Commands;

/// <summary>
/// <c>--inject-failure R:S</c>, for testing failure handling: the pieces of pipeline rank R throw in their forward
/// during step S (1-based), as a real fault in a stage would.
/// </summary>
internal static class FailureInjection
{
    public static void Arm(string? spec, Pipeline pipe, Func<int> currentStep)
    {
        if (spec is null) return;
        var parts = spec.Split(':');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int rank) || !int.TryParse(parts[1], out int step))
            throw new ArgumentException($"--inject-failure: '{spec}' is not R:S (a pipeline rank and a step, e.g. 1:3).");
        int ranks = pipe.Schedule.RankCount;
        int? here = pipe.Options.Cluster is { } cluster ? cluster.Rank : null;
        foreach (var piece in pipe.Stages)
        {
            bool target = here is { } r ? r == rank : pipe.Schedule.StageToRank[piece.Index] == rank;
            if (!target) continue;
            var first = piece.children().OfType<nn.Module<Tensor, Tensor>>().First();
            first.register_forward_pre_hook((_, input) =>
            {
                if (currentStep() == step)
                    throw new InvalidOperationException($"injected failure (--inject-failure {spec}) in the forward of step {step}");
                return input;
            });
        }
    }
}

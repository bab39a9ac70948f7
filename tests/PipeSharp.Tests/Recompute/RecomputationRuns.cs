using PipeSharp.Checkpoints;
using PipeSharp.Runtime;
using PipeSharp.Verification;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Recompute;

/// <summary>Trains one model twice, without recomputation and with it, from the same initial state, and compares.</summary>
internal static class RecomputationRuns
{
    /// <summary>
    /// The largest difference between any parameter or buffer (BatchNorm statistics) of the two trained pipelines.
    /// Each pipeline trains on its own after <paramref name="seed"/> seeds the global generator, so dropout draws alike
    /// (<paramref name="reseed"/>: the recomputing one is seeded with the next seed, and its keyed dropout with the next
    /// dropout seed, instead, to show that the masks matter).
    /// </summary>
    public static double Difference<TInput>(Func<TorchSharp.Modules.Sequential> makeModel, PipelineOptions options, Recomputation recomputation,
        IReadOnlyList<(TInput Input, Tensor Target)> batches, Func<Tensor, Tensor, Tensor> loss, Func<Pipeline, TInput, Tensor, float> trainStep,
        long seed = 1, bool reseed = false)
    {
        var reference = Train(makeModel, options with { Recomputation = Recomputation.None }, batches, loss, trainStep, seed, null);
        var recomputed = Train(makeModel, options with { Recomputation = recomputation, DropoutSeed = options.DropoutSeed + (reseed ? 1 : 0) }, batches, loss, trainStep, reseed ? seed + 1 : seed, reference.Initial);
        try
        {
            Assert.Equal(reference.State.Keys.Order(), recomputed.State.Keys.Order());
            using var scope = NewDisposeScope();
            double max = 0;
            foreach (var (name, t) in reference.State)
                max = Math.Max(max, (t.to(float64) - recomputed.State[name].to(float64)).abs().max().item<double>());
            return max;
        }
        finally
        {
            foreach (var t in reference.State.Values.Concat(recomputed.State.Values).Concat(reference.Initial.Values)) t.Dispose();
        }
    }

    /// <summary><see cref="Difference{TInput}"/> for a model of one input tensor.</summary>
    public static double Difference(Func<TorchSharp.Modules.Sequential> makeModel, PipelineOptions options, Recomputation recomputation,
        IReadOnlyList<(Tensor Input, Tensor Target)> batches, Func<Tensor, Tensor, Tensor> loss, long seed = 1) =>
        Difference(makeModel, options, recomputation, batches, loss, (pipe, x, y) => pipe.TrainStep(x, y), seed);

    public static optim.Optimizer Adam(IEnumerable<TorchSharp.Modules.Parameter> parameters) => optim.Adam(parameters, 1e-3);

    // The state after training (and, for the first run, the initial state the second run starts from).
    private static (Dictionary<string, Tensor> State, Dictionary<string, Tensor> Initial) Train<TInput>(Func<TorchSharp.Modules.Sequential> makeModel,
        PipelineOptions options, IReadOnlyList<(TInput Input, Tensor Target)> batches, Func<Tensor, Tensor, Tensor> loss,
        Func<Pipeline, TInput, Tensor, float> trainStep, long seed, Dictionary<string, Tensor>? initial)
    {
        using var model = makeModel();
        if (initial is not null)
        {
            using var noGrad = no_grad();
            foreach (var (name, t) in model.state_dict()) t.copy_(initial[name]);
        }
        var start = initial ?? model.state_dict().ToDictionary(p => p.Key, p => p.Value.detach().clone());
        int copies = 0;
        using var pipe = options.Replicas > 1
            ? new Pipeline(() => copies++ == 0 ? model : makeModel(), options, loss, Adam)
            : new Pipeline(model, options, loss, Adam);
        manual_seed(seed);
        foreach (var (x, y) in batches) trainStep(pipe, x, y);
        return (pipe.StateDict().ToDictionary(p => p.Key, p => p.Value), start);
    }
}

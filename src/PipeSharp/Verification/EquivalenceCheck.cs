using PipeSharp.Native;
using PipeSharp.Randomness;
using PipeSharp.Checkpoints;
using PipeSharp.Boundaries;
using PipeSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Verification;

/// <summary>
/// Trains the same model twice on the same batches, once plainly on one device and once through a
/// <see cref="Pipeline"/>, and reports how far the parameters ended up apart.
/// </summary>
public static class EquivalenceCheck
{
    /// <summary>
    /// The largest absolute difference between any parameter of the two trained copies.
    /// </summary>
    /// <param name="makeModel">
    /// Makes the model (called twice, and once more per extra in-process replica; the pipeline's copy gets the reference's
    /// initial weights). With a <see cref="PipelineOptions.Backend"/> of several processes every process trains the reference and compares the
    /// stages it holds; every rank gets the largest difference of all.
    /// </param>
    /// <param name="options">The pipeline to check.</param>
    /// <param name="optimizer">Makes an optimizer for a set of parameters (used for the whole reference model and for each stage).</param>
    /// <param name="loss">Mean-reduced loss.</param>
    /// <param name="batches">The batches of the steps, in order.</param>
    public static double MaxParameterDifference(
        Func<TorchSharp.Modules.Sequential> makeModel,
        PipelineOptions options,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<Tensor, Tensor, Tensor> loss,
        IReadOnlyList<(Tensor Input, Tensor Target)> batches) =>
        Compare(makeModel, options, optimizer, loss, batches).MaxDifference;

    /// <summary>
    /// Like <see cref="MaxParameterDifference"/>, and also reports how far apart the pipeline's copies of shared
    /// parameters (e.g. a tied embedding) ended up.
    /// </summary>
    public static (double MaxDifference, double SharedCopyDrift) Compare(
        Func<TorchSharp.Modules.Sequential> makeModel,
        PipelineOptions options,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<Tensor, Tensor, Tensor> loss,
        IReadOnlyList<(Tensor Input, Tensor Target)> batches) =>
        Compare(makeModel, options, optimizer, loss, batches, (model, x) => model.forward(x), (pipe, x, y) => pipe.TrainStep(x, y));

    /// <summary>
    /// Like <see cref="Compare(Func{TorchSharp.Modules.Sequential}, PipelineOptions, Func{IEnumerable{TorchSharp.Modules.Parameter}, optim.Optimizer}, Func{Tensor, Tensor, Tensor}, IReadOnlyList{ValueTuple{Tensor, Tensor}})"/>,
    /// for a model whose layers read and write named tensors (<see cref="SetLayer"/>) and whose batches are several
    /// named tensors (<see cref="PipelineOptions.Inputs"/>); the reference runs with <see cref="SetModels.Forward"/>.
    /// </summary>
    public static (double MaxDifference, double SharedCopyDrift) Compare(
        Func<TorchSharp.Modules.Sequential> makeModel,
        PipelineOptions options,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<Tensor, Tensor, Tensor> loss,
        IReadOnlyList<(TensorSet Inputs, Tensor Target)> batches) =>
        Compare(makeModel, options, optimizer, loss, batches, SetModels.Forward, (pipe, x, y) => pipe.TrainStep(x, y));

    private static (double MaxDifference, double SharedCopyDrift) Compare<TInput>(
        Func<TorchSharp.Modules.Sequential> makeModel,
        PipelineOptions options,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        Func<Tensor, Tensor, Tensor> loss,
        IReadOnlyList<(TInput Input, Tensor Target)> batches,
        Func<TorchSharp.Modules.Sequential, TInput, Tensor> forward,
        Func<Pipeline, TInput, Tensor, float> trainStep)
    {
        using var reference = makeModel();
        using var model = makeModel();
        CopyParameters(reference, model);
        // A model with keyed dropout: numbered as the pipeline numbers its layers, and keyed by step for the whole batch.
        bool keyed = reference.modules().OfType<KeyedDropout>().Any(d => d.Probability > 0);
        if (keyed) KeyedDropout.NumberLayers(reference.named_children().Select(c => c.module));
        using (var opt = optimizer(ParameterIdentity.Distinct(reference.parameters())))
        {
            var unique = ParameterIdentity.Distinct(reference.parameters());
            long step = 0;
            foreach (var (x, y) in batches)
            {
                using var scope = NewDisposeScope();
                opt.zero_grad();
                using (keyed ? DropoutContext.Enter(options.DropoutSeed, step, firstSample: 0) : null) // the pipeline's masks, the whole batch at once
                    loss(forward(reference, x), y).backward();
                step++;
                if (options.MaxGradNorm is { } max) nn.utils.clip_grad_norm_(unique, max);
                using (Native.CollectionPause.Enter()) opt.step(); // other threads of the process may be allocating
            }
        }

        double drift, difference;
        int copies = 0; // replicas in this process need a model each; the pipeline makes them equal to the first
        using (var pipe = options.Replicas > 1 && options.Backend is null
                   ? new Pipeline(() => copies++ == 0 ? model : makeModel(), options, loss, optimizer)
                   : new Pipeline(model, options, loss, optimizer))
        {
            foreach (var (x, y) in batches) trainStep(pipe, x, y);
            drift = pipe.SharedParameterDrift();
            // The pieces held here (with MPI, this process's stages), by model name, against the reference.
            var trained = pipe.StateDict();
            try
            {
                using var scope = NewDisposeScope();
                difference = 0;
                foreach (var (name, p) in reference.named_parameters())
                    if (trained.TryGetValue(name, out var t))
                        difference = Math.Max(difference, (p.detach().cpu() - t).abs().max().item<float>());
            }
            finally
            {
                foreach (var t in trained.Values) t.Dispose();
            }
            if (options.Backend is { ProcessCount: > 1 } backend)
            {
                var all = new double[backend.ProcessCount];
                all[backend.ProcessIndex] = difference;
                difference = backend.AllReduceSum(all).Max();
            }
        }
        return (difference, drift);
    }

    /// <summary>Copies every parameter of <paramref name="from"/> into the same-named parameter of <paramref name="to"/>.</summary>
    public static void CopyParameters(nn.Module from, nn.Module to)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var source = from.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in to.named_parameters())
        {
            if (!source.TryGetValue(name, out var q))
                throw new ArgumentException($"parameter '{name}' is missing from the source model.", nameof(from));
            p.copy_(q);
        }
    }

    /// <summary>The largest absolute difference between same-named parameters of two models of one architecture.</summary>
    public static double MaxDifference(nn.Module a, nn.Module b)
    {
        using var scope = NewDisposeScope();
        var right = b.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        double max = 0;
        foreach (var (name, p) in a.named_parameters())
        {
            if (!right.TryGetValue(name, out var q))
                throw new ArgumentException($"parameter '{name}' of the first model is missing from the second.", nameof(b));
            max = Math.Max(max, (p.detach().cpu() - q.detach().cpu()).abs().max().item<float>());
        }
        return max;
    }
}

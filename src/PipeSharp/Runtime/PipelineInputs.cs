using PipeSharp.Boundaries;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>Checks a batch given as named tensors against the pipeline's declared inputs, before anything runs.</summary>
internal static class PipelineInputs
{
    /// <summary>A plain tensor as the pipeline's input set: under its only input's name.</summary>
    public static TensorSet Single(Tensor input, BoundaryPlan plan, string parameterName = "input")
    {
        if (plan.Inputs.Count != 1)
            throw new ArgumentException(
                $"this pipeline takes {plan.Inputs.Count} inputs ({string.Join(", ", plan.Inputs)}), not one tensor: pass a TensorSet with " +
                "a tensor under each of those names.", parameterName);
        return TensorSet.Of(input, plan.Inputs[0]);
    }

    /// <summary>
    /// Refuses a set whose names are not the declared inputs, or whose tensors (and the target) do not all have the same
    /// number of samples in dimension 0; returns that number.
    /// </summary>
    public static long Check(TensorSet inputs, Tensor? target, BoundaryPlan plan, string parameterName = "inputs")
    {
        ArgumentNullException.ThrowIfNull(inputs, parameterName);
        var missing = plan.Inputs.Where(n => !inputs.ContainsKey(n)).ToList();
        var extra = inputs.Keys.Where(n => !plan.Inputs.Contains(n)).ToList();
        if (missing.Count > 0 || extra.Count > 0)
            throw new ArgumentException(
                $"{parameterName} holds {string.Join(", ", inputs.Keys.DefaultIfEmpty("nothing"))} but the pipeline's inputs are " +
                $"{string.Join(", ", plan.Inputs)}{(missing.Count > 0 ? $" (missing: {string.Join(", ", missing)})" : "")}" +
                $"{(extra.Count > 0 ? $" (not an input: {string.Join(", ", extra)})" : "")}: pass exactly the tensors named in PipelineOptions.Inputs.",
                parameterName);
        long samples = -1;
        string? first = null;
        foreach (var (name, tensor) in inputs)
        {
            if (tensor.dim() == 0)
                throw new ArgumentException($"{parameterName}['{name}'] is a scalar: it needs a batch dimension (dimension 0) to split into micro-batches.", parameterName);
            if (first is null) (first, samples) = (name, tensor.shape[0]);
            else if (tensor.shape[0] != samples)
                throw new ArgumentException(
                    $"{parameterName}['{name}'] has {tensor.shape[0]} samples but {parameterName}['{first}'] has {samples}: every input needs the " +
                    "same number of samples in dimension 0.", parameterName);
        }
        if (target is not null && (target.dim() == 0 || target.shape[0] != samples))
            throw new ArgumentException(
                $"target has shape [{string.Join(",", target.shape)}] but {parameterName}['{first}'] has {samples} samples: both need the same " +
                "number of samples in dimension 0.", "target");
        return samples;
    }
}

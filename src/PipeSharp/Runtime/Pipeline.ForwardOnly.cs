using PipeSharp.Boundaries;
using PipeSharp.Schedules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

public sealed partial class Pipeline
{
    /// <summary>
    /// A pipelined forward pass without gradients and in evaluation mode (no dropout), for evaluation and inference.
    /// The batch is split into <see cref="PipelineOptions.MicroBatches"/> micro-batches, or into one per sample when it
    /// has fewer (so a single sequence can be continued with the training pipeline); with fewer samples than replicas,
    /// every replica runs the whole batch. Afterwards every module (each
    /// stage and each of its submodules) is back in the mode it was in before.
    /// </summary>
    /// <returns>The last stage's output for the whole batch, on the last stage's device (on the CPU, and in every process, across processes).</returns>
    public Tensor Forward(Tensor input, CancellationToken cancellation = default)
    {
        ThrowIfUnusable();
        ArgumentNullException.ThrowIfNull(input);
        return Forward(PipelineInputs.Single(input, _boundaries), cancellation, nameof(input));
    }

    /// <summary>A pipelined forward pass of a batch of several named tensors; otherwise as <see cref="Forward(Tensor, CancellationToken)"/>.</summary>
    public Tensor Forward(TensorSet inputs, CancellationToken cancellation = default) => Forward(inputs, cancellation, nameof(inputs));

    private Tensor Forward(TensorSet inputs, CancellationToken cancellation, string parameterName)
    {
        ThrowIfUnusable();
        ArgumentNullException.ThrowIfNull(inputs, parameterName);
        long samples = inputs.Count == 1 && inputs.Values.First().dim() == 0 ? 0 : PipelineInputs.Check(inputs, null, _boundaries, parameterName);
        // Fewer samples than replicas (one sequence when generating text): every replica runs all of them, and the
        // output is replica 0's. Every process passes the same batch, so all of them decide alike.
        bool replicate = _plan.Replicas > 1 && samples > 0 && samples < _plan.Replicas;
        var replicated = replicate ? Repeat(inputs, _plan.Replicas) : null;
        try
        {
            long batchSamples = replicate ? samples * _plan.Replicas : samples;
            long perReplica = batchSamples > 0 ? batchSamples / _plan.Replicas : Options.MicroBatches;
            var output = Forward(_plan.ForwardScheduleFor(perReplica), replicated ?? inputs, batchSamples, cancellation, parameterName);
            if (!replicate) return output;
            using (output) return output.narrow(0, 0, samples).clone();
        }
        finally
        {
            if (replicated != null) foreach (var t in replicated.Values) t.Dispose();
        }
    }

    private Tensor Forward(Schedule schedule, TensorSet batch, long samples, CancellationToken cancellation, string parameterName)
    {
        using var step = NewStep(schedule, batch, samples, null, cancellation, parameterName);
        Tensor? output = null;
        RunInEvalMode(step, () => output = _collectives.CollectOutputs(step, step.Cancellation));
        return output!;
    }

    /// <summary>
    /// The pipeline's loss of a batch without training: <see cref="Forward(Tensor, CancellationToken)"/>'s pipelined forward (no gradients,
    /// evaluation mode, every module's mode restored afterwards) with the loss computed on the last stage, so that only
    /// a scalar crosses ranks, never the outputs. Equals the loss of <see cref="Forward(Tensor, CancellationToken)"/>'s output against
    /// <paramref name="target"/> within float32 round-off (each micro-batch weighted by its share of the samples, as in
    /// <see cref="TrainStep(Tensor, Tensor, CancellationToken)"/>). Across processes every process calls it with the same batch and gets the same loss.
    /// </summary>
    /// <param name="input">The batch, split as <see cref="Forward(Tensor, CancellationToken)"/> splits it.</param>
    /// <param name="target">The targets, the same number of samples in dimension 0.</param>
    /// <param name="cancellation">Stops the evaluation (every rank) when cancelled.</param>
    /// <returns>The loss of the whole batch (the mean over its samples).</returns>
    public float Evaluate(Tensor input, Tensor target, CancellationToken cancellation = default) =>
        Evaluate(input, target, null, cancellation).Loss;

    /// <summary>
    /// Like <see cref="Evaluate(Tensor, Tensor, CancellationToken)"/>, with a metric computed on the last stage too.
    /// </summary>
    /// <param name="input">The batch, split as <see cref="Forward(Tensor, CancellationToken)"/> splits it.</param>
    /// <param name="target">The targets, the same number of samples in dimension 0.</param>
    /// <param name="metric">
    /// Optional: one value of a micro-batch's output and targets (e.g. its accuracy, a mean over its samples); each
    /// micro-batch's value is weighted by its share of the samples and the values summed, like the loss.
    /// </param>
    /// <param name="cancellation">Stops the evaluation (every rank) when cancelled.</param>
    /// <exception cref="PipelineStageException">A stage (or the loss or metric on the last stage) failed; all ranks were stopped.</exception>
    public EvaluationResult Evaluate(Tensor input, Tensor target, Func<Tensor, Tensor, Tensor>? metric, CancellationToken cancellation = default)
    {
        ThrowIfUnusable();
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(target);
        if (input.dim() == 0 || target.dim() == 0 || target.shape[0] != input.shape[0] || input.shape[0] == 0)
            throw new ArgumentException(
                $"target has shape [{string.Join(",", target.shape)}] but input has shape [{string.Join(",", input.shape)}]: " +
                "both need the same number of samples (at least one) in dimension 0.", nameof(target));
        // As in Forward: fewer samples than replicas run whole on every replica. Every replica then scores the same
        // samples with weights that sum to 1 over all replicas, so the total is still the batch's mean.
        long samples = input.shape[0];
        bool replicate = _plan.Replicas > 1 && samples < _plan.Replicas;
        using var inputs = replicate ? Repeated(input) : null;
        using var targets = replicate ? Repeated(target) : null;
        var batch = inputs ?? input;
        using var step = NewStep(_plan.ForwardScheduleFor(batch.shape[0] / _plan.Replicas), PipelineInputs.Single(batch, _boundaries),
            batch.shape[0], targets ?? target, cancellation, nameof(input));
        var evaluation = new StepEvaluation(metric, _plan.Replicas);
        step.Evaluation = evaluation;
        double[] sums = [];
        RunInEvalMode(step, () => sums = _collectives.SumOverReplicas(
            step, StepEvaluation.ValueCount, r => evaluation.Values(r, step.Replicas[r]!), step.Cancellation));
        return new EvaluationResult((float)sums[0], evaluation.HasMetric ? (float)sums[1] : null);
    }

    // Runs a forward-only step with every module in eval mode (no dropout, as for any evaluation), then the collective
    // part; afterwards every module is back in the mode it was in.
    private void RunInEvalMode(StepContext step, Action collective)
    {
        var modes = _replicas.SelectMany(r => r.Local).Select(s => ModuleModes.Of(s.Module)).ToList();
        foreach (var s in _replicas.SelectMany(r => r.Local)) s.Module.eval();
        try
        {
            _runner.RunActions(step);
            LastForward = step.Statistics(step.StageBusy);
            _runner.Collective(step, collective);
        }
        finally
        {
            foreach (var stage in modes) ModuleModes.Restore(stage);
        }
    }

    private Tensor Repeated(Tensor t) => t.repeat([_plan.Replicas, .. Enumerable.Repeat(1L, (int)t.dim() - 1)]);

    // Every tensor of the set repeated along dimension 0 (the caller disposes the copies).
    private static TensorSet Repeat(TensorSet inputs, int times)
    {
        var copies = new TensorSet();
        foreach (var (name, t) in inputs) copies.Add(name, t.repeat([times, .. Enumerable.Repeat(1L, (int)t.dim() - 1)]));
        return copies;
    }
}

using PipeSharp.Boundaries;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Makes a step's context from a batch: split among the replicas (each takes 1/D of it), then into the schedule's
/// micro-batches, with each micro-batch's loss weight its share of the whole batch.
/// </summary>
internal static class StepInputs
{
    /// <param name="schedule">The schedule the step runs.</param>
    /// <param name="replicas">Number of replicas of the job.</param>
    /// <param name="local">The replicas held by this process: only their shares are made.</param>
    /// <param name="input">The batch's named tensors (every process passes the same).</param>
    /// <param name="samples">Its number of samples (checked by the caller: every tensor has that many in dimension 0).</param>
    /// <param name="target">Its targets, or null for a forward-only pass.</param>
    /// <param name="cancellation">The caller's cancellation.</param>
    /// <param name="failure">The backend's failure token.</param>
    /// <param name="parameterName">The caller's name for the input, for messages.</param>
    public static StepContext Split(Schedules.Schedule schedule, int replicas, IEnumerable<int> local, TensorSet input, long samples, Tensor? target,
        CancellationToken cancellation, CancellationToken failure, string parameterName)
    {
        int m = schedule.MicroBatchCount;
        if (samples > 0 && samples < (long)replicas * m && replicas > 1)
            throw new ArgumentException(
                $"{parameterName} has {samples} samples but each of the {replicas} replicas splits its share into {m} micro-batches: " +
                $"use a batch of at least {replicas * m} samples, or fewer micro-batches or replicas.", parameterName);
        var inputShares = replicas == 1 ? [input] : MicroBatches.Split(input, replicas, parameterName);
        var targetShares = target is null ? null : replicas == 1 ? [target] : MicroBatches.Split(target, replicas, nameof(target));
        double total = samples;
        var steps = new ReplicaStep?[replicas];
        try
        {
            foreach (int r in local)
            {
                var inputs = MicroBatches.Split(inputShares[r], m, parameterName);
                var targets = targetShares is null ? null : MicroBatches.Split(targetShares[r], m, nameof(target));
                var sizes = inputs.Select(t => t.Values.First().shape[0]).ToArray();
                long first = inputShares.Take(r).Sum(share => share.Values.First().shape[0]);
                var firsts = new long[m];
                for (int i = 0; i < m; i++) (firsts[i], first) = (first, first + sizes[i]);
                steps[r] = new ReplicaStep(inputs, targets, sizes.Select(n => n / total).ToArray(), firsts);
            }
        }
        catch
        {
            foreach (var s in steps) s?.Dispose();
            throw;
        }
        finally
        {
            if (replicas > 1)
            {
                foreach (var t in inputShares.SelectMany(set => set.Values)) t.Dispose();
                if (targetShares != null) foreach (var t in targetShares) t.Dispose();
            }
        }
        return new StepContext(schedule, steps, cancellation, failure);
    }
}

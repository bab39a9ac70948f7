using PipeSharp.Native;
using PipeSharp.Backends;
using PipeSharp.Boundaries;
using PipeSharp.Schedules;

using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>Memory of one stage: its parameters and the activations it holds at its peak.</summary>
/// <param name="Stage">The stage number (its place in the model).</param>
/// <param name="ParameterBytes">Bytes of its parameters.</param>
/// <param name="ActivationBytesPerMicroBatch">Native memory one micro-batch's forward keeps for its backward (null where it cannot be measured).</param>
/// <param name="PeakMicroBatches">The most micro-batches the schedule has it hold at once.</param>
public sealed record StageMemory(int Stage, long ParameterBytes, long? ActivationBytesPerMicroBatch, int PeakMicroBatches)
{
    /// <summary>Activation memory at the schedule's peak: per micro-batch times the peak count.</summary>
    public long? PeakActivationBytes => ActivationBytesPerMicroBatch * PeakMicroBatches;
}

/// <summary>
/// Measures each stage's memory through the action interpreter: one forward of the first micro-batch of a sample
/// batch, run as a one-micro-batch forward schedule on replica 0 with the graph kept as in training, each stage's
/// native heap read before its forward and once the forward's temporaries are freed (the forwards run one after the other, each
/// measured once the previous stage's has ended, as each needs the previous stage's
/// output); times the number of micro-batches the training schedule holds at once.
/// </summary>
internal static class MemoryMeasurement
{
    public static IReadOnlyList<StageMemory> Measure(PipelinePlan plan, StepRunner runner, ReplicaRuntime first, IBackend backend, Tensor sampleInput, int microBatches) =>
        MeasureWithBoundaries(plan, runner, first, backend, sampleInput, microBatches).Stages;

    /// <summary>
    /// As <see cref="Measure"/>, with the bytes of the boundary tensors each stage's forward sends per micro-batch, what
    /// each forward holds at its end before its temporaries are freed, and the first stage's input (one micro-batch of
    /// <paramref name="sampleInput"/>).
    /// </summary>
    public static (IReadOnlyList<StageMemory> Stages, long[] OutputBytes, long[] ForwardPeakBytes, long InputBytes) MeasureWithBoundaries(
        PipelinePlan plan, StepRunner runner, ReplicaRuntime first, IBackend backend, Tensor sampleInput, int microBatches,
        bool withoutRecomputation = false)
    {
        // A micro-batch as a replica trains it: with D replicas, each takes 1/D of the batch.
        var parts = MicroBatches.Split(sampleInput, microBatches * plan.Replicas, nameof(sampleInput));
        foreach (var other in parts.Skip(1)) other.Dispose();
        long inputBytes = parts[0].numel() * parts[0].element_size();
        var schedule = plan.Schedule;
        int count = schedule.StageCount;
        bool measures = first.Index == 0; // across processes, the other replicas' processes hold the same stages
        var shares = new ReplicaStep?[plan.Replicas];
        if (measures) shares[0] = new ReplicaStep([TensorSet.Of(parts[0])], null, [1.0]);
        else parts[0].Dispose();
        var activation = new long?[count];
        var outputs = new long[count];
        var forwardPeaks = new long[count];
        var measured = Enumerable.Range(0, count).Select(_ => new ManualResetEventSlim()).ToArray();
        using (var step = new StepContext(ScheduleGenerators.ForwardOnly(count, 1, schedule.StageToRank), shares, CancellationToken.None, backend.FailureToken)
               { ActivationBytes = activation, WithoutRecomputation = withoutRecomputation, OutputBytes = outputs, ForwardPeakBytes = forwardPeaks, HeapBefore = new long?[count], Measured = measured,
                 KeptForMeasurement = new List<Tensor>?[count] })
        {
            // No finalizer may free native memory between a stage's heap readings: what earlier steps left to finalizers
            // is freed now (with several workers the pipeline collects after each no-GC region, Native/CollectionPause,
            // and finalizers running during a forward once made it measure a fraction of its activations).
            GC.Collect();
            GC.WaitForPendingFinalizers();
            runner.RunActions(step);
        }
        foreach (var e in measured) e.Dispose();

        var parameterBytes = new long[count];
        foreach (var stage in first.Local)
            parameterBytes[stage.Module.Index] = ParameterIdentity.Distinct(stage.Module.parameters()).Sum(p => p.numel() * p.element_size());
        if (backend.ProcessCount > 1)
        {
            // Every process gets every stage's figures; a stage's come from the one process that measured it (-1: none).
            bool Mine(int s) => measures && first.Stages[s] != null;
            var sums = backend.AllReduceSum([
                .. Enumerable.Range(0, count).Select(s => Mine(s) ? parameterBytes[s] : 0),
                .. Enumerable.Range(0, count).Select(s => Mine(s) ? activation[s] ?? -1 : 0),
                .. Enumerable.Range(0, count).Select(s => Mine(s) ? outputs[s] : 0),
                .. Enumerable.Range(0, count).Select(s => Mine(s) ? forwardPeaks[s] : 0)]);
            for (int s = 0; s < count; s++)
            {
                parameterBytes[s] = sums[s];
                activation[s] = sums[count + s] < 0 ? null : sums[count + s];
                outputs[s] = sums[2 * count + s];
                forwardPeaks[s] = sums[3 * count + s];
            }
        }
        var peaks = PeakHeldMicroBatches(schedule);
        return (Enumerable.Range(0, count).Select(s => new StageMemory(s, parameterBytes[s], activation[s], peaks[s])).ToList(), outputs, forwardPeaks, inputBytes);
    }

    // For each stage, the most micro-batches between a forward and the end of its backward (B, or W).
    private static int[] PeakHeldMicroBatches(Schedule schedule)
    {
        var peak = new int[schedule.StageCount];
        var held = new int[schedule.StageCount];
        foreach (var list in schedule.RankActions)
        {
            foreach (var a in list)
            {
                if (a.Kind == ActionKind.Forward) peak[a.Stage] = Math.Max(peak[a.Stage], ++held[a.Stage]);
                else if (a.Kind is ActionKind.Backward or ActionKind.WeightGrad) held[a.Stage]--;
            }
        }
        return peak;
    }
}

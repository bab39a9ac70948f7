using PipeSharp.Schedules;
using PipeSharp.Tracing;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>Memory of one stage (model piece): its parameters and the activations it holds at its peak.</summary>
/// <param name="Stage">The stage (model piece) number.</param>
/// <param name="ParameterBytes">Bytes of its parameters.</param>
/// <param name="ActivationBytesPerMicroBatch">Native memory one micro-batch's forward keeps for its backward (null where it cannot be measured).</param>
/// <param name="PeakMicroBatches">The most micro-batches the schedule has it hold at once.</param>
public sealed record StageMemory(int Stage, long ParameterBytes, long? ActivationBytesPerMicroBatch, int PeakMicroBatches)
{
    /// <summary>Activation memory at the schedule's peak: per micro-batch times the peak count.</summary>
    public long? PeakActivationBytes => ActivationBytesPerMicroBatch * PeakMicroBatches;
}

public sealed partial class Pipeline
{
    /// <summary>
    /// Measures each stage's memory: parameter bytes, and the native memory one micro-batch's forward keeps for the
    /// backward (a forward of the first micro-batch of <paramref name="sampleInput"/>, a whole training batch, through
    /// each stage in turn, with the native heap read before and after), times the number of micro-batches the schedule
    /// holds at once.
    /// Call it between steps. With an MPI cluster every process calls it (with the same input): each measures the
    /// stages it holds (replica 0's processes; a stage's output goes to the next stage's process as in a forward),
    /// and every process gets the figures of all stages.
    /// </summary>
    public IReadOnlyList<StageMemory> MeasureMemory(Tensor sampleInput)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_boundaries.IsPlain)
            throw new NotSupportedException(
                "MeasureMemory measures models whose layers map one tensor to one tensor; this model's stages pass several named tensors.");
        // A micro-batch as a replica trains it: with D replicas, each takes 1/D of the batch.
        var parts = MicroBatches.Split(sampleInput, Options.MicroBatches * Options.DataParallel, nameof(sampleInput));
        foreach (var other in parts.Skip(1)) other.Dispose();
        var first = parts[0];
        var peaks = PeakHeldMicroBatches(Schedule);
        int count = _stages.Length;
        var parameterBytes = new long[count];
        var activation = new long?[count];
        var replica = _replicas[0];
        bool measures = replica.Index == 0; // with MPI, the other replicas' processes hold the same stages
        Tensor? carry = null; // the previous stage's output, when that stage is held here too
        for (int s = 0; s < count && measures; s++)
        {
            var stage = _stages[s];
            if (stage == null) continue; // another process's
            parameterBytes[s] = ParameterIdentity.Distinct(stage.Module.parameters()).Sum(p => p.numel() * p.element_size());
            var input = s == 0 ? first : carry ?? replica.Transport.Receive(new Transport.MessageKey(Transport.MessageKind.Activation, s, 0), CancellationToken.None);
            Tensor? output = null;
            int index = s;
            _workers.First(w => w.Replica == replica && w.Rank == stage.Rank).Worker.Run(() =>
            {
                using var scope = torch.NewDisposeScope();
                var x = input.to(stage.Device);
                if (index > 0) x = x.detach().requires_grad_(true);
                long? before = NativeHeap.BytesInUse();
                var y = stage.Module.forward(x);
                long? after = NativeHeap.BytesInUse();
                if (before is { } b && after is { } a) activation[index] = Math.Max(0, a - b);
                output = y.detach().cpu().clone().DetachFromDisposeScope();
            }).Wait();
            if (s > 0) input.Dispose(); // stage 0's input is `first`, disposed at the end
            carry = null;
            if (s + 1 == count) output!.Dispose();
            else if (_stages[s + 1] != null) carry = output;
            else replica.Transport.Send(new Transport.MessageKey(Transport.MessageKind.Activation, s + 1, 0), output!);
        }
        first.Dispose();
        if (_cluster != null)
        {
            // Every process gets every stage's figures; a stage's come from the one process that measured it.
            var sums = _cluster.AllReduceSum([.. parameterBytes, .. activation.Select((a, s) => _stages[s] != null && measures ? a ?? -1 : 0)]);
            for (int s = 0; s < count; s++)
            {
                parameterBytes[s] = sums[s];
                activation[s] = sums[count + s] < 0 ? null : sums[count + s];
            }
        }
        return Enumerable.Range(0, count).Select(s => new StageMemory(s, parameterBytes[s], activation[s], peaks[s])).ToList();
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

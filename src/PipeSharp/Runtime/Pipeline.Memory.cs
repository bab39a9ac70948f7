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
    /// backward (a forward of the first micro-batch of <paramref name="sampleInput"/> through each stage in turn,
    /// with the native heap read before and after), times the number of micro-batches the schedule holds at once.
    /// Call it between steps.
    /// </summary>
    public IReadOnlyList<StageMemory> MeasureMemory(Tensor sampleInput)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_cluster != null)
            throw new NotSupportedException("MeasureMemory runs every stage in turn, so it needs them all in one process: measure without an MPI cluster.");
        var parts = MicroBatches.Split(sampleInput, Options.MicroBatches, nameof(sampleInput));
        foreach (var other in parts.Skip(1)) other.Dispose();
        var first = parts[0];
        var peaks = PeakHeldMicroBatches(Schedule);
        var result = new List<StageMemory>();
        Tensor? carry = first;
        for (int s = 0; s < _stages.Length; s++)
        {
            var stage = _stages[s]!;
            long parameterBytes = ParameterIdentity.Distinct(stage.Module.parameters()).Sum(p => p.numel() * p.element_size());
            long? activation = null;
            Tensor? next = null;
            var input = carry;
            _workers[stage.Rank].Worker.Run(() =>
            {
                using var scope = torch.NewDisposeScope();
                var x = input!.to(stage.Device);
                if (s > 0) x = x.detach().requires_grad_(true);
                long? before = NativeHeap.BytesInUse();
                var y = stage.Module.forward(x);
                long? after = NativeHeap.BytesInUse();
                if (before is { } b && after is { } a) activation = Math.Max(0, a - b);
                next = y.detach().clone().DetachFromDisposeScope();
            }).Wait();
            if (s > 0) carry!.Dispose(); // stage 0's input is `first`, disposed at the end
            carry = next;
            result.Add(new StageMemory(s, parameterBytes, activation, peaks[s]));
        }
        carry?.Dispose();
        first.Dispose();
        return result;
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

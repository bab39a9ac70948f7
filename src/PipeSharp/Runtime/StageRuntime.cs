using PipeSharp.Partitioning;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// A stage as the runtime sees it: its module on its device, its optimizer, and the tensors its forwards keep
/// for their backwards (the stage's input leaf and its output, or the weighted loss on the last stage).
/// </summary>
internal sealed class StageRuntime : IDisposable
{
    private readonly Dictionary<int, (Tensor? Input, Tensor Output)> _saved = new();

    public StageRuntime(StageModule module, Device device, int rank, optim.Optimizer optimizer, optim.lr_scheduler.LRScheduler? scheduler)
    {
        Module = module;
        Device = device;
        Rank = rank;
        Optimizer = optimizer;
        Scheduler = scheduler;
    }

    public StageModule Module { get; }
    public Device Device { get; }
    public int Rank { get; }
    public optim.Optimizer Optimizer { get; }
    public optim.lr_scheduler.LRScheduler? Scheduler { get; }

    /// <summary>Keeps the tensors of micro-batch <paramref name="microBatch"/> (taken out of every dispose scope).</summary>
    public void Save(int microBatch, Tensor? input, Tensor output)
    {
        input?.DetachFromDisposeScope();
        output.DetachFromDisposeScope();
        _saved.Add(microBatch, (input, output));
    }

    /// <summary>Hands back what <see cref="Save"/> kept; the caller disposes it.</summary>
    public (Tensor? Input, Tensor Output) Take(int microBatch)
    {
        if (!_saved.Remove(microBatch, out var s))
            throw new InvalidOperationException($"stage {Module.Index} has no saved forward of micro-batch {microBatch}.");
        return s;
    }

    /// <summary>Disposes whatever a failed step left saved.</summary>
    public void DropSaved()
    {
        foreach (var (input, output) in _saved.Values)
        {
            input?.Dispose();
            output.Dispose();
        }
        _saved.Clear();
    }

    public void Dispose()
    {
        DropSaved();
        Optimizer.Dispose();
    }
}

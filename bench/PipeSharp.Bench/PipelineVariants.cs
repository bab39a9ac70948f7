using PipeSharp.Runtime;
using TorchSharp;

namespace PipeSharp.Bench;

/// <summary>(c), (d): PipeSharp's <see cref="Pipeline"/> training the workload.</summary>
internal sealed class PipelineVariant : Variant
{
    private readonly Workload _data;
    private float _lastLoss = float.NaN;

    public PipelineVariant(string key, string description, Workload data, PipelineOptions options) : base(key, description)
    {
        _data = data;
        Pipeline = new Pipeline(Workload.CreateModel(), options, LossOnLastStage, Workload.CreateOptimizer);
        // The first step fixes the workers' libtorch thread count (it is initialised lazily from the last value set on
        // any thread; see ThreadCheck), so run it now, before the main thread sets 2 threads for variant (b).
        Run(1);
        if (options.ThreadsPerRank is int wanted && LastStageThreads != wanted)
            throw new InvalidOperationException($"({key}) the last stage's worker has {LastStageThreads} intra-op threads, wanted {wanted}.");
    }

    public Pipeline Pipeline { get; }

    /// <summary>torch.get_num_threads() on the last stage's worker thread, read where the loss runs.</summary>
    public int LastStageThreads { get; private set; }

    public override float LastLoss => _lastLoss;

    public override void Run(int steps)
    {
        for (int s = 0; s < steps; s++)
        {
            using var scope = torch.NewDisposeScope();
            _lastLoss = Pipeline.TrainStep(_data.Input, _data.Target);
        }
    }

    private torch.Tensor LossOnLastStage(torch.Tensor output, torch.Tensor target)
    {
        LastStageThreads = torch.get_num_threads();
        return Workload.Loss(output, target);
    }

    public override void Dispose() => Pipeline.Dispose();
}

using PipeSharp.Backends;
using PipeSharp.Memory;
using PipeSharp.Native;
using PipeSharp.Tracing;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// A pipeline's memory budget, prediction and measured peak. Before the stages are built it checks the parameters,
/// gradients and optimizer state alone against <see cref="PipelineOptions.MemoryPerDevice"/>; with a sample batch
/// (<see cref="Pipeline.PredictMemory"/>, or the first training step) it measures each stage's activations and
/// boundary tensors, predicts each rank's peak with <see cref="MemoryModel"/> and checks it; during training it
/// reports the measured peak of this process's native heap beside the prediction.
/// </summary>
/// <remarks>
/// The measured peak is the native heap (glibc's, where libtorch's CPU tensors live) above what the process held
/// before the pipeline was made, not counting the model's own tensors, which the pipeline trains: so it covers the
/// model, what the pipeline allocates, and anything else the program allocates while it trains.
/// </remarks>
internal sealed class PipelineMemory
{
    private readonly long? _baseline;
    private readonly Lazy<IReadOnlyList<IReadOnlyList<(object Key, long Bytes)>>> _layerParameters;
    private (double Factor, string Source) _optimizerState = (2, "not known yet, taken as 2 x parameters");

    public PipelineMemory(PipelineOptions options, ModelSource model)
    {
        Budgets = options.MemoryPerDevice;
        if (Budgets is not null) LargeBlockRelease.EnsureApplied(); // a budget must hold for what the process keeps, not only uses
        // Asked for only when a budget or a prediction needs it: a spec builds each layer once, alone, to count it.
        _layerParameters = new(model.LayerParameters);
        // The model's own tensors are in the heap already (a built model's): they are part of what the pipeline holds.
        _baseline = NativeHeap.BytesInUse() - model.HeldBytes();
    }

    /// <summary>The budgets, one for every rank or one per rank; null: none.</summary>
    public IReadOnlyList<long>? Budgets { get; }

    /// <summary>The last prediction made (null before one).</summary>
    public MemoryPrediction? Prediction { get; private set; }

    /// <summary>The largest measured peak over the training steps so far, above the baseline.</summary>
    public long? PeakBytes { get; private set; }

    /// <summary>
    /// Before anything is built: each stage's parameters (copies of shared ones included), their gradients and the
    /// optimizer state, from the layers and the optimizer's type (found by making it for a one-element parameter).
    /// </summary>
    public void CheckBeforeBuild(PipelinePlan plan, Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer)
    {
        if (Budgets is null) return;
        MemoryBudget.CheckOption(Budgets, plan.Ranks);
        _optimizerState = Probe(optimizer);
        var (parameters, copies) = StageParameterBytes(plan.Balance, _layerParameters.Value);
        var stages = Enumerable.Range(0, plan.Balance.Count)
            .Select(s => new StageMemoryInputs(s, plan.Balance[s], parameters[s], copies[s], 0, 0, 0)).ToList();
        var inputs = Inputs(stages, acrossProcesses: !plan.HostsAll);
        var prediction = MemoryModel.Predict(plan.Schedule, inputs);
        MemoryBudget.Check(prediction, Budgets, Plan(plan, 0), inputs, "parameters, gradients and optimizer state alone, before the stages are built");
    }

    /// <summary>Predicts every rank's peak from a measurement of each stage (and checks it against the budgets, if any).</summary>
    public MemoryPrediction Predict(PipelinePlan plan, IReadOnlyList<StageMemory> measured, long[] outputBytes, long[] forwardPeakBytes, long inputBytes, long samplesPerReplica,
        optim.Optimizer stageOptimizer, long[]? recomputedBytes = null)
    {
        _optimizerState = OptimizerStateSize.Of(stageOptimizer);
        var copies = StageParameterBytes(plan.Balance, _layerParameters.Value).Copies;
        var schedule = plan.Schedule;
        var split = schedule.SplitBackwards.Select(b => b.Stage).ToHashSet();
        var stages = measured.Select(m =>
        {
            int s = m.Stage;
            long input = s == 0 ? inputBytes : outputBytes[s - 1];
            return new StageMemoryInputs(s, plan.Balance[s], m.ParameterBytes, copies[s],
                m.ActivationBytesPerMicroBatch ?? 0, input, outputBytes[s], recomputedBytes?[s] ?? 0,
                split.Contains(s) ? Math.Max(input, outputBytes[s]) * plan.Balance[s] : 0, forwardPeakBytes[s]);
        }).ToList();
        var inputs = Inputs(stages, acrossProcesses: !plan.HostsAll);
        var prediction = MemoryModel.Predict(schedule, inputs);
        Prediction = prediction;
        if (Budgets is not null)
            MemoryBudget.Check(prediction, Budgets, Plan(plan, samplesPerReplica), inputs, "measured before training");
        return prediction;
    }

    /// <summary>What the prediction says this process needs: its rank's peak under MPI, its ranks' together (<see cref="MemoryPrediction.SharedProcessBytes"/>) in one process.</summary>
    public long? PredictedForThisProcess(PipelinePlan plan)
    {
        if (Prediction is not { } p) return null;
        return plan.HostsAll ? p.SharedProcessBytes * plan.LocalReplicas.Count : p.Ranks[plan.HostedRanks[0] % plan.Ranks].TotalBytes;
    }

    /// <summary>A sampler for the next step, if a prediction was made (the measurement costs a heap read per action).</summary>
    public MemoryPeak? NewPeak() => Prediction is null ? null : new MemoryPeak();

    /// <summary>The step's measured peak above the baseline (null without a sampler or a readable heap).</summary>
    public long? EndStep(MemoryPeak? peak)
    {
        if (peak is null) return null;
        peak.Sample();
        if (peak.Bytes is not { } bytes || _baseline is not { } baseline) return null;
        long above = bytes - baseline;
        PeakBytes = Math.Max(PeakBytes ?? 0, above);
        return above;
    }

    private MemoryModelInputs Inputs(IReadOnlyList<StageMemoryInputs> stages, bool acrossProcesses) =>
        // libtorch's autograd keeps a parameter's .grad between steps once made; zero_grad zeroes it (see docs/memory.md).
        new(stages, _optimizerState.Factor, _optimizerState.Source, ReceivesIntoOwnBuffers: acrossProcesses, GradientsKeptBetweenSteps: GradientsKept);

    /// <summary>Whether parameter gradients stay allocated between steps (TorchSharp's zero_grad zeroes them in place).</summary>
    internal static bool GradientsKept { get; set; } = true;

    private MemoryPlan Plan(PipelinePlan plan, long samplesPerReplica)
    {
        var schedule = plan.Schedule;
        string? name = Schedules.ScheduleGenerators.Names.Contains(schedule.Name) ? schedule.Name : null;
        return new MemoryPlan(name, plan.Ranks, schedule.MicroBatchCount, schedule.StageCount / schedule.RankCount, samplesPerReplica, null,
            _layerParameters.Value.Select(l => l.Sum(p => p.Bytes)).ToList());
    }

    // Per stage: its distinct parameters' bytes, and of these the ones an earlier stage uses too (the copies it will get).
    private static (long[] Parameters, long[] Copies) StageParameterBytes(IReadOnlyList<int> balance, IReadOnlyList<IReadOnlyList<(object Key, long Bytes)>> layers)
    {
        var parameters = new long[balance.Count];
        var copies = new long[balance.Count];
        var seen = new HashSet<object>();
        int first = 0;
        for (int s = 0; s < balance.Count; s++)
        {
            var own = layers.Skip(first).Take(balance[s]).SelectMany(l => l).DistinctBy(p => p.Key).ToList();
            parameters[s] = own.Sum(p => p.Bytes);
            copies[s] = own.Where(p => seen.Contains(p.Key)).Sum(p => p.Bytes);
            foreach (var p in own) seen.Add(p.Key);
            first += balance[s];
        }
        return (parameters, copies);
    }

    /// <summary>The optimizer state per parameter byte, from an optimizer made for a one-element parameter.</summary>
    internal static (double Factor, string Source) Probe(Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer)
    {
        try
        {
            using var probe = new TorchSharp.Modules.Parameter(zeros(1));
            var made = optimizer([probe]);
            try { return OptimizerStateSize.Of(made); }
            finally { (made as IDisposable)?.Dispose(); }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return (2, $"not known (the optimizer could not be made for a probe: {e.Message}), taken as 2 x parameters");
        }
    }

    private static long Bytes(IEnumerable<Tensor> tensors) => tensors.Sum(t => t.numel() * t.element_size());
}

using System.Globalization;
using PipeSharp.Runtime;
using PipeSharp.Schedules;

namespace PipeSharp.Planning;

/// <summary>
/// One layout the planner considered, with its predicted step time, throughput, memory and bubble. A value: turn it
/// into pipeline options with <see cref="ToPipelineOptions"/>.
/// </summary>
/// <param name="Ranks">Pipeline ranks per replica.</param>
/// <param name="Replicas">Copies of the pipeline (data parallelism).</param>
/// <param name="MicroBatches">Micro-batches per replica and step.</param>
/// <param name="Schedule">The schedule's name (<see cref="ScheduleGenerators.Names"/>).</param>
/// <param name="StagesPerRank">Stages each rank holds (2 for interleaved and zb-v, else 1).</param>
/// <param name="Recomputation">What training forwards keep (<see cref="Runtime.Recomputation.None"/> or <see cref="Runtime.Recomputation.Full"/>).</param>
/// <param name="ThreadsPerRank">Intra-op threads of each rank.</param>
/// <param name="Balance">Layers per stage.</param>
/// <param name="ScheduleCosts">F, B, I, W of a mean stage, by which the zero-bubble generators order actions.</param>
/// <param name="PredictedStepSeconds">Predicted seconds of a training step.</param>
/// <param name="SamplesPerSecond">Predicted samples per second (the batch over the step time).</param>
/// <param name="TokensPerSecond">Predicted tokens per second (samples per second times tokens per sample).</param>
/// <param name="PeakMemoryPerRank">Predicted peak bytes of each rank (<see cref="Memory.MemoryPrediction"/>).</param>
/// <param name="Bubble">Idle share of the ranks' time in the predicted schedule, between 0 and 1.</param>
/// <param name="PredictedRankBusySeconds">Predicted seconds each rank computes per step (actions and optimizer step).</param>
public sealed record PlanCandidate(
    int Ranks,
    int Replicas,
    int MicroBatches,
    string Schedule,
    int StagesPerRank,
    Recomputation Recomputation,
    int ThreadsPerRank,
    IReadOnlyList<int> Balance,
    ActionCosts ScheduleCosts,
    double PredictedStepSeconds,
    double SamplesPerSecond,
    double TokensPerSecond,
    IReadOnlyList<long> PeakMemoryPerRank,
    double Bubble,
    IReadOnlyList<double> PredictedRankBusySeconds)
{
    /// <summary>Predicted seconds from the first action's start to the last action's end (the simulated makespan).</summary>
    public double PredictedActionSeconds { get; init; }

    /// <summary>The largest rank's predicted peak.</summary>
    public long LargestRankBytes => PeakMemoryPerRank.Max();

    /// <summary>
    /// The options that run this plan: ranks, balance, micro-batches, schedule (with its stages per rank and costs),
    /// recomputation, replicas and threads set on <paramref name="baseOptions"/> (its other settings kept: devices,
    /// clipping, budgets, backend...).
    /// </summary>
    public PipelineOptions ToPipelineOptions(PipelineOptions? baseOptions = null) => (baseOptions ?? new PipelineOptions()) with
    {
        Ranks = Ranks,
        Balance = Balance,
        BalanceMode = Partitioning.BalanceMode.Parameters, // the split is given: no mode may measure another
        DeviceSpeeds = null,
        MicroBatches = MicroBatches,
        Schedule = Schedule,
        StagesPerRank = Schedule == "interleaved" ? StagesPerRank : null,
        ScheduleCosts = ScheduleCosts,
        Recomputation = Recomputation,
        Replicas = Replicas,
        ThreadsPerRank = ThreadsPerRank,
    };

    /// <summary>One line: the layout and the prediction.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Ranks} rank(s) x {Replicas} replica(s), {MicroBatches} micro-batches, {Schedule}, recompute {Recomputation}, " +
        $"{ThreadsPerRank} thread(s) per rank, balance {string.Join(",", Balance)}: {PredictedStepSeconds * 1e3:0.0} ms per step, " +
        $"{SamplesPerSecond:0.0} samples/s, peak {Memory.MemorySize.Format(LargestRankBytes)} per rank, bubble {Bubble:P0}");
}

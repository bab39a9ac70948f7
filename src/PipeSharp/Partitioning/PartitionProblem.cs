using PipeSharp.Schedules;

namespace PipeSharp.Partitioning;

/// <summary>
/// What <see cref="StagePartitioner.Solve"/> splits: the model's layers with their costs, the placement of the stages on
/// ranks, each rank's speed and memory budget, and the cost of a message between two ranks. Plain lists, in the units
/// of a profile: seconds per micro-batch and bytes.
/// </summary>
/// <remarks>
/// The cost model (docs/partitioning.md): rank r's time per micro-batch is the sum, over its stages, of the stage's
/// layer seconds divided by <c>DeviceSpeeds[r]</c>, plus, for each cut between a stage of r and a neighbouring stage on
/// another rank, the time of the message r receives over that cut (the activation from the stage before, the gradient
/// from the stage after: <see cref="TransferSeconds"/> of the bytes the layer before the cut outputs). Rank r's memory is
/// the sum over its stages of the layers' <see cref="LayerStateBytes"/> plus <see cref="StagePeakMicroBatches"/> of the
/// stage times its layers' <see cref="LayerActivationBytes"/>.
/// </remarks>
public sealed record PartitionProblem
{
    /// <summary>
    /// Seconds of each layer per micro-batch on a device of speed 1, in model order: forward plus backward (F + B, or
    /// F + I + W for the zero-bubble schedules). Finite and at least 0.
    /// </summary>
    public required IReadOnlyList<double> LayerSeconds { get; init; }

    /// <summary>The rank of each stage, in stage order (e.g. <see cref="Schedule.StageToRank"/>): its length is the stage count.</summary>
    public required IReadOnlyList<int> StageToRank { get; init; }

    /// <summary>
    /// Speed factor of each rank's device, one per rank, each positive and finite: a rank twice as slow as the reference
    /// has 0.5. Null: every rank 1.
    /// </summary>
    public IReadOnlyList<double>? DeviceSpeeds { get; init; }

    /// <summary>Memory each rank may use, in bytes: one budget for every rank or one per rank. Null: no budget.</summary>
    public IReadOnlyList<long>? MemoryPerDevice { get; init; }

    /// <summary>Bytes each layer holds throughout a step: parameters, their gradients and the optimizer state. Null: 0.</summary>
    public IReadOnlyList<long>? LayerStateBytes { get; init; }

    /// <summary>Bytes each layer's forward keeps for its backward, per micro-batch. Null: 0.</summary>
    public IReadOnlyList<long>? LayerActivationBytes { get; init; }

    /// <summary>Bytes of each layer's output per micro-batch: what crosses a cut after it (and its gradient back). Null: 0.</summary>
    public IReadOnlyList<long>? LayerOutputBytes { get; init; }

    /// <summary>
    /// Per stage, the largest number of micro-batches whose activations it holds at once under the schedule
    /// (<see cref="StagePeaks"/> works it out). Null: 1 for every stage.
    /// </summary>
    public IReadOnlyList<int>? StagePeakMicroBatches { get; init; }

    /// <summary>
    /// Seconds for a message of a number of bytes from one rank to another: <c>(from, to, bytes) =&gt; seconds</c>, e.g.
    /// a <c>LinkCost</c> per pair of ranks. Never asked for two stages on the same rank. Null: messages are free.
    /// </summary>
    public Func<int, int, long, double>? TransferSeconds { get; init; }

    /// <summary>Number of ranks: one more than the largest entry of <see cref="StageToRank"/>.</summary>
    public int RankCount => StageToRank.Count == 0 ? 0 : StageToRank.Max() + 1;

    /// <summary>Number of stages.</summary>
    public int StageCount => StageToRank.Count;

    /// <summary>
    /// Per stage, the largest number of micro-batches held at once from a forward until its backward (B, or I when the
    /// backward is split), walking each rank's action list: for one stage per rank, the rank's
    /// <see cref="SimulationResult.PeakActivations"/>.
    /// </summary>
    public static IReadOnlyList<int> StagePeaks(Schedule schedule)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        var held = new int[schedule.StageCount];
        var peak = new int[schedule.StageCount];
        foreach (var actions in schedule.RankActions)
        foreach (var a in actions)
        {
            if (a.Kind == ActionKind.Forward) peak[a.Stage] = Math.Max(peak[a.Stage], ++held[a.Stage]);
            else if (a.Kind is ActionKind.Backward or ActionKind.InputGrad) held[a.Stage]--;
        }
        return peak;
    }

    /// <summary>Refuses a problem that cannot be solved as given, naming the property and the fix.</summary>
    /// <exception cref="ArgumentException">A list is empty, of the wrong length, or holds a value out of range.</exception>
    public void Check()
    {
        int n = LayerSeconds?.Count ?? 0;
        if (n == 0) throw new ArgumentException("LayerSeconds is empty: give the seconds of every layer, in model order.", nameof(LayerSeconds));
        for (int i = 0; i < n; i++)
            if (!(LayerSeconds![i] >= 0) || double.IsInfinity(LayerSeconds[i]))
                throw new ArgumentException($"LayerSeconds[{i}] is {LayerSeconds[i]}: every layer's seconds must be finite and at least 0.", nameof(LayerSeconds));
        if (StageToRank is null || StageToRank.Count == 0)
            throw new ArgumentException("StageToRank is empty: give the rank of every stage (e.g. 0,1 for two stages on two ranks).", nameof(StageToRank));
        Balance.CheckStageCount(StageToRank.Count, n);
        if (StageToRank.Any(r => r < 0))
            throw new ArgumentException($"StageToRank {string.Join(",", StageToRank)} holds a negative rank: ranks are numbered from 0.", nameof(StageToRank));
        int ranks = RankCount;
        if (Enumerable.Range(0, ranks).FirstOrDefault(r => !StageToRank.Contains(r), -1) is var idle and >= 0)
            throw new ArgumentException($"StageToRank {string.Join(",", StageToRank)} gives rank {idle} no stage: number the ranks 0..{ranks - 1} and give each a stage.", nameof(StageToRank));
        if (DeviceSpeeds is { } speeds)
        {
            if (speeds.Count != ranks)
                throw new ArgumentException(
                    $"DeviceSpeeds has {speeds.Count} entries for {ranks} ranks: give one speed factor per rank, e.g. {string.Join(",", Enumerable.Repeat("1", ranks))} " +
                    "(a rank half as fast as the others: 0.5).", nameof(DeviceSpeeds));
            for (int r = 0; r < ranks; r++)
                if (!(speeds[r] > 0) || double.IsInfinity(speeds[r]))
                    throw new ArgumentException(
                        $"DeviceSpeeds[{r}] is {speeds[r]}: a speed factor must be a positive finite number (1 for the reference device, 0.5 for one half as fast).",
                        nameof(DeviceSpeeds));
        }
        if (MemoryPerDevice is { } budgets)
        {
            if (budgets.Count != 1 && budgets.Count != ranks)
                throw new ArgumentException($"MemoryPerDevice has {budgets.Count} entries for {ranks} ranks: give one budget for every rank or one per rank.", nameof(MemoryPerDevice));
            if (budgets.Any(b => b < 1))
                throw new ArgumentException($"MemoryPerDevice {string.Join(",", budgets)}: every budget must be at least 1 byte.", nameof(MemoryPerDevice));
        }
        CheckBytes(LayerStateBytes, n, nameof(LayerStateBytes));
        CheckBytes(LayerActivationBytes, n, nameof(LayerActivationBytes));
        CheckBytes(LayerOutputBytes, n, nameof(LayerOutputBytes));
        if (StagePeakMicroBatches is { } peaks && (peaks.Count != StageToRank.Count || peaks.Any(p => p < 0)))
            throw new ArgumentException(
                $"StagePeakMicroBatches has {peaks.Count} entries ({string.Join(",", peaks)}): give one count of at least 0 per stage ({StageToRank.Count}).",
                nameof(StagePeakMicroBatches));
    }

    private static void CheckBytes(IReadOnlyList<long>? bytes, int layers, string name)
    {
        if (bytes is null) return;
        if (bytes.Count != layers)
            throw new ArgumentException($"{name} has {bytes.Count} entries for {layers} layers: give one per layer.", name);
        if (bytes.Any(b => b < 0)) throw new ArgumentException($"{name} holds a negative byte count: every entry must be at least 0.", name);
    }
}

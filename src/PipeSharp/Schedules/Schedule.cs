using System.Text;

namespace PipeSharp.Schedules;

/// <summary>
/// A pipeline schedule as data: for each rank (one worker with one device) the ordered list of actions it runs,
/// and the placement that says which rank holds each stage. Sends and receives follow from the placement:
/// the output of a forward goes to the rank of the next stage, the input gradient of a backward to the rank of
/// the previous one. Schedules are made by the generators in <see cref="ScheduleGenerators"/> (or by hand) and
/// checked by <see cref="ScheduleValidator"/> before anything runs.
/// </summary>
public sealed class Schedule
{
    /// <summary>Creates a schedule. Use <see cref="ScheduleValidator.Validate"/> to check it.</summary>
    /// <param name="name">A short name for messages, e.g. <c>1f1b</c>.</param>
    /// <param name="stageCount">Number of stages the model is cut into.</param>
    /// <param name="microBatchCount">Number of micro-batches per step.</param>
    /// <param name="stageToRank">For each stage, the rank that holds it.</param>
    /// <param name="rankActions">For each rank, its actions in the order it runs them.</param>
    public Schedule(string name, int stageCount, int microBatchCount,
        IReadOnlyList<int> stageToRank, IReadOnlyList<IReadOnlyList<PipelineAction>> rankActions)
    {
        Name = name;
        StageCount = stageCount;
        MicroBatchCount = microBatchCount;
        StageToRank = stageToRank;
        RankActions = rankActions;
    }

    /// <summary>A short name for messages.</summary>
    public string Name { get; }

    /// <summary>Number of stages.</summary>
    public int StageCount { get; }

    /// <summary>Number of micro-batches per step.</summary>
    public int MicroBatchCount { get; }

    /// <summary>For each stage, the rank that holds it.</summary>
    public IReadOnlyList<int> StageToRank { get; }

    /// <summary>For each rank, its actions in order.</summary>
    public IReadOnlyList<IReadOnlyList<PipelineAction>> RankActions { get; }

    /// <summary>Number of ranks (workers).</summary>
    public int RankCount => RankActions.Count;

    private HashSet<(int Stage, int MicroBatch)>? _splitBackwards;

    /// <summary>The (stage, micro-batch) pairs whose backward is split into I and W (worked out once).</summary>
    internal IReadOnlySet<(int Stage, int MicroBatch)> SplitBackwards => _splitBackwards ??=
        RankActions.SelectMany(a => a).Where(a => a.Kind == ActionKind.InputGrad).Select(a => (a.Stage, a.MicroBatch)).ToHashSet();

    /// <summary>True when the schedule has no backward actions (evaluation and inference).</summary>
    public bool IsForwardOnly => RankActions.All(a => a.All(x => x.Kind == ActionKind.Forward));

    /// <summary>The schedule as a grid: one line per rank, actions in text form separated by spaces.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        for (int r = 0; r < RankCount; r++)
            sb.Append("rank ").Append(r).Append(": ").AppendJoin(' ', RankActions[r]).AppendLine();
        return sb.ToString();
    }
}

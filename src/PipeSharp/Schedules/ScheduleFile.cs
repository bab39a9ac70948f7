using System.Globalization;
using System.Text;

namespace PipeSharp.Schedules;

/// <summary>
/// Reads and writes schedules as text, so a schedule can be saved, edited by hand and run. The format:
/// <code>
/// # comments start with '#'
/// name: my-schedule
/// stages: 4              (model stages; several may share a rank)
/// microbatches: 4
/// placement: 0 1 1 0     (the rank of each stage; optional: stage s on rank s)
/// rank 0: 0F0 0F1 3F0 3B0 ...
/// rank 1: 1F0 2F0 2B0 1B0 ...
/// </code>
/// Actions use the text form of <see cref="PipelineAction"/>: stage, kind (F, B, I, W), micro-batch.
/// </summary>
public static class ScheduleFile
{
    /// <summary>Writes <paramref name="schedule"/> in the text format.</summary>
    public static string Format(Schedule schedule)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# PipeSharp schedule: one line per rank, actions in the order the rank runs them");
        sb.Append("name: ").AppendLine(schedule.Name);
        sb.Append("stages: ").AppendLine(schedule.StageCount.ToString(CultureInfo.InvariantCulture));
        sb.Append("microbatches: ").AppendLine(schedule.MicroBatchCount.ToString(CultureInfo.InvariantCulture));
        sb.Append("placement: ").AppendLine(string.Join(' ', schedule.StageToRank));
        for (int r = 0; r < schedule.RankCount; r++)
            sb.Append("rank ").Append(r).Append(": ").AppendLine(string.Join(' ', schedule.RankActions[r]));
        return sb.ToString();
    }

    /// <summary>Saves <paramref name="schedule"/> to <paramref name="path"/>.</summary>
    public static void Save(Schedule schedule, string path) => File.WriteAllText(path, Format(schedule));

    /// <summary>Loads and validates a schedule file.</summary>
    /// <exception cref="FormatException">A line is malformed; the message names the file and line.</exception>
    /// <exception cref="InvalidScheduleException">The schedule is well-formed but cannot run.</exception>
    public static Schedule Load(string path)
    {
        var schedule = Parse(File.ReadAllText(path), path);
        ScheduleValidator.Validate(schedule);
        return schedule;
    }

    /// <summary>Parses the text format (not validated; see <see cref="ScheduleValidator"/>).</summary>
    public static Schedule Parse(string text, string source = "schedule")
    {
        string name = Path.GetFileNameWithoutExtension(source);
        int? stages = null, microBatches = null;
        int[]? placement = null;
        var ranks = new SortedDictionary<int, List<PipelineAction>>();
        int lineNumber = 0;
        foreach (var raw in text.Split('\n'))
        {
            lineNumber++;
            var line = raw.Split('#')[0].Trim();
            if (line.Length == 0) continue;
            int colon = line.IndexOf(':');
            if (colon < 0) throw Error(source, lineNumber, $"'{line}' is not 'key: value'");
            string key = line[..colon].Trim().ToLowerInvariant(), value = line[(colon + 1)..].Trim();
            try
            {
                switch (key)
                {
                    case "name": name = value; break;
                    case "stages": stages = int.Parse(value, CultureInfo.InvariantCulture); break;
                    case "microbatches": microBatches = int.Parse(value, CultureInfo.InvariantCulture); break;
                    case "placement":
                        placement = value.Split([' ', ','], StringSplitOptions.RemoveEmptyEntries)
                            .Select(v => int.Parse(v, CultureInfo.InvariantCulture)).ToArray();
                        break;
                    default:
                        if (!key.StartsWith("rank ") || !int.TryParse(key[5..], NumberStyles.None, CultureInfo.InvariantCulture, out int rank))
                            throw Error(source, lineNumber, $"unknown key '{key}': use name, stages, microbatches, placement or 'rank N'");
                        if (ranks.ContainsKey(rank)) throw Error(source, lineNumber, $"rank {rank} is listed twice");
                        ranks[rank] = value.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(PipelineAction.Parse).ToList();
                        break;
                }
            }
            catch (FormatException e) when (!e.Message.StartsWith(source))
            {
                throw Error(source, lineNumber, e.Message);
            }
        }
        if (ranks.Count == 0) throw new FormatException($"{source}: no 'rank N: ...' lines.");
        if (ranks.Keys.Last() != ranks.Count - 1) throw new FormatException($"{source}: ranks must be numbered 0..{ranks.Count - 1} without gaps.");
        var all = ranks.Values.SelectMany(a => a).ToList();
        int stageCount = stages ?? all.Max(a => a.Stage) + 1;
        int m = microBatches ?? all.Max(a => a.MicroBatch) + 1;
        var stageToRank = placement ?? Enumerable.Range(0, stageCount).ToArray();
        return new Schedule(name, stageCount, m, stageToRank, ranks.Values.Cast<IReadOnlyList<PipelineAction>>().ToList());
    }

    private static FormatException Error(string source, int line, string problem) =>
        new($"{source}, line {line}: {problem.TrimEnd('.')}.");
}

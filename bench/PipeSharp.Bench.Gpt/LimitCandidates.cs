using PipeSharp.Models;
using PipeSharp.Training;

namespace PipeSharp.Bench.Speed;

/// <summary>
/// One layout the limit benchmark runs through the trainer (the CLI path): what <c>pipesharp train --model gpt</c> gets
/// from <c>--ranks</c>, <c>--replicas</c>, <c>--microbatches</c> (per replica), <c>--schedule</c> and
/// <c>--threads-per-rank</c> (null: the default, the cores divided by the ranks of the process).
/// </summary>
internal sealed record Layout(string Key, int Ranks, int Replicas, int MicroBatches, string Schedule, int? ThreadsPerRank)
{
    /// <summary>The layout as the CLI's options.</summary>
    public string Flags =>
        $"--ranks {Ranks}{(Replicas > 1 ? $" --replicas {Replicas}" : "")} --microbatches {MicroBatches}" +
        $"{(Ranks > 1 ? $" --schedule {Schedule}" : "")}{(ThreadsPerRank is { } t ? $" --threads-per-rank {t}" : "")}";

    /// <summary>The trainer for this layout, as the CLI builds it.</summary>
    public TrainerRun Build(GptConfig config, ILanguageModelTask task, LanguageModelTrainingOptions options) =>
        new(config, task, options, Ranks, MicroBatches, Schedule, ThreadsPerRank, replicas: Replicas);

    /// <summary>
    /// Parses <c>key=ranks:replicas:microBatches:schedule:threads</c> (threads <c>-</c> for the default), the form of
    /// <c>--layout</c>: e.g. <c>plan=1:2:2:1f1b:1</c> for a plan's choice.
    /// </summary>
    public static Layout Parse(string text)
    {
        var (key, spec) = text.Split('=', 2) is [var k, var v] ? (k, v) : (text, text);
        var f = spec.Split(':');
        if (f.Length != 5)
            throw new ArgumentException($"--layout '{text}': expected key=ranks:replicas:microBatches:schedule:threads, e.g. dp2=1:2:1:1f1b:1.");
        return new Layout(key, int.Parse(f[0]), int.Parse(f[1]), int.Parse(f[2]), f[3], f[4] == "-" ? null : int.Parse(f[4]));
    }
}

/// <summary>
/// The candidate layouts for the 2-core limit of issue 13, in one place: the benchmark measures each of them side by
/// side with the plain loops, and the best is judged against the limit. Add a planner's choice here (or with
/// <c>--layout key=...</c> on the command line).
/// </summary>
internal static class LimitCandidates
{
    public static IReadOnlyList<Layout> All { get; } =
    [
        new("1rank-2t", Ranks: 1, Replicas: 1, MicroBatches: 1, "1f1b", ThreadsPerRank: null), // 1 rank with 2 intra-op threads
        new("dp2", Ranks: 1, Replicas: 2, MicroBatches: 1, "1f1b", ThreadsPerRank: 1),         // data parallelism, 8 sequences per replica
        new("dp2-m2", Ranks: 1, Replicas: 2, MicroBatches: 2, "1f1b", ThreadsPerRank: 1),      // the same, in micro-batches of 4 sequences
        new("1f1b", Ranks: 2, Replicas: 1, MicroBatches: 8, "1f1b", ThreadsPerRank: null),
        new("zb-v", Ranks: 2, Replicas: 1, MicroBatches: 8, "zb-v", ThreadsPerRank: null),
        new("zb-h1", Ranks: 2, Replicas: 1, MicroBatches: 8, "zb-h1", ThreadsPerRank: null),
        new("zb-v-m4", Ranks: 2, Replicas: 1, MicroBatches: 4, "zb-v", ThreadsPerRank: null),
    ];
}

using PipeSharp.Partitioning;
using PipeSharp.Runtime;
using PipeSharp.Training;

namespace PipeSharp.Cli.Output;

/// <summary>The header and the summary of <c>train --model gpt</c>, as lines of text.</summary>
internal static class LanguageModelReport
{
    public static List<string> Header(ILanguageModelTask task, LanguageModelTrainer trainer, string schedule)
    {
        var c = trainer.Config;
        var o = trainer.Options;
        var pipe = trainer.Pipeline;
        // --microbatches is per replica: each replica takes its share of the batch.
        int d = Math.Max(1, pipe.Options.Replicas), share = o.BatchSize / d, m = pipe.Options.MicroBatches;
        int small = share / m, large = (o.BatchSize + d * m - 1) / (d * m);
        var lines = new List<string>
        {
            $"task       {task.Description}",
            $"model      GPT, {c.Layers} layer{S(c.Layers)}, width {c.Width}, {c.Heads} heads, context {c.ContextLength}, " +
            $"vocabulary {c.VocabularySize}, dropout {c.Dropout:G}{(c.TieEmbeddings ? ", tied embeddings" : "")}; " +
            $"{TotalParameters(trainer):N0} parameters",
            $"schedule   {schedule}, {(d > 1 ? $"{d} replicas x " : "")}{m} micro-batch{Es(m)} of {(small == large ? $"{small}" : $"{small}-{large}")} sequences " +
            $"(batch {o.BatchSize} x {c.ContextLength} tokens)" +
            (pipe.Options.Recomputation.IsNone ? "" : $", recomputation {pipe.Options.Recomputation}"),
            $"optimizer  AdamW, lr {o.LearningRate:G} (warm-up {o.WarmupSteps} steps, cosine decay to {o.MinLearningRate:G}), " +
            $"weight decay {o.WeightDecay:G}, " + (o.MaxGradNorm is { } clip ? $"gradient norm clipped to {clip:G}" : "no clipping"),
            $"training   {o.Steps} steps, seed {o.Seed}, validation loss on {o.EvalBatches} batch{Es(o.EvalBatches)} " +
            (o.EvalEvery > 0 ? $"every {o.EvalEvery} steps and at the end" : "at the end") +
            (pipe.Options.ThreadsPerRank is { } t ? $", {t} thread{S(t)} per rank" : ""),
        };
        var pieces = pipe.Stages;
        bool chunks = pipe.Schedule.StageCount > pipe.Schedule.RankCount;
        var names = pieces.Select(p => LayerNames(p, c.Layers)).ToList();
        int width = names.Max(n => n.Length);
        if (pipe.Options.Backend is { ProcessCount: > 1 } backend)
            lines.Add($"processes  {backend.ProcessCount} MPI processes: {pipe.Options.Replicas} replica{S(pipe.Options.Replicas)} x " +
                      $"{pipe.Schedule.RankCount} rank{S(pipe.Schedule.RankCount)}; the stages below are process 0's");
        for (int i = 0; i < pieces.Count; i++)
        {
            int index = pieces[i].Index;
            string name = chunks ? $"stage {index,-3} rank {pipe.Schedule.StageToRank[index],-3}" : $"stage {index,-4}";
            lines.Add($"{name} {names[i].PadRight(width)}  {pipe.Devices[i]}  {Parameters(pieces[i]),10:N0} parameters");
        }
        if (c.TieEmbeddings && pieces.Count > 1)
            lines.Add("           (the head's weight is the token embedding: the head's stage holds a synchronised copy, counted once in the total)");
        return lines;
    }

    /// <param name="summary">What the trainer's run returned; null if it was interrupted during a step.</param>
    /// <param name="firstStep">The step the run started from (0, or the resumed checkpoint's).</param>
    /// <param name="elapsed">Wall time of the whole command so far.</param>
    /// <param name="recentLoss">The mean training loss of the last steps, and how many.</param>
    /// <param name="accuracy">The sorting task's exact-match accuracy and the number of problems.</param>
    public static List<string> Summary(LanguageModelTrainer trainer, TrainingSummary? summary, int firstStep, TimeSpan elapsed,
        (double Mean, int Steps)? recentLoss, (double Value, int Problems)? accuracy)
    {
        int last = trainer.Step, total = trainer.Options.Steps;
        string steps = last - firstStep == 1 ? $"step {last}" : $"steps {firstStep + 1}-{last}";
        var lines = new List<string>
        {
            (last < total ? $"interrupted after step {last} of {total}" : $"done: {total} steps") +
            (firstStep > 0 && last > firstStep ? $" ({steps} in this run, resumed from step {firstStep})" : "") +
            $" in {Duration(elapsed)}",
        };
        if (summary is null || summary.Steps == 0)
        {
            if (recentLoss is { } r) lines.Add($"loss         training {r.Mean:F4} (mean of the last {r.Steps} steps)");
            return lines;
        }
        string over = summary.Steps > 1 ? $"{firstStep + 2}-{last}" : $"{last}";
        lines.Add($"throughput   {summary.TokensPerSecond:N0} tokens/s (steps {over}; the run's first step is left out), " +
                  $"training took {Duration(summary.Elapsed)} with validation");
        lines.Add("rank busy    " + string.Join(", ", summary.StageBusy.Select((b, r) => $"rank {r} {b * 100:F0}%")) +
                  " (share of the training steps' time each rank computed)");
        if (summary.Memory != null) lines.Add("memory       per stage: parameters, activations held at the schedule's peak");
        foreach (var mem in summary.Memory ?? [])
        {
            string activations = mem.PeakActivationBytes is { } peak
                ? $"{Mb(peak)} ({mem.PeakMicroBatches} micro-batch{Es(mem.PeakMicroBatches)} x {Mb(mem.ActivationBytesPerMicroBatch!.Value)})"
                : "not measured";
            lines.Add($"             stage {mem.Stage}: parameters {Mb(mem.ParameterBytes)}, activations {activations}");
        }
        lines.Add($"loss         training {summary.LastLoss:F4} (step {last}" +
                  (recentLoss is { } mean ? $"; mean of the last {mean.Steps} steps {mean.Mean:F4})" : ")") +
                  (summary.ValidationLoss is { } v ? $", validation {v:F4} ({trainer.Options.EvalBatches} batch{Es(trainer.Options.EvalBatches)})" : ""));
        if (accuracy is { } a)
            lines.Add($"accuracy     {a.Value * 100:F1}% of {a.Problems} validation problems sorted exactly (greedy decoding)");
        return lines;
    }

    /// <summary>Distinct parameters of the model: the tied head's copy on the last stage counts once.</summary>
    public static long TotalParameters(LanguageModelTrainer trainer) => trainer.ParameterCount;

    private static long Parameters(StageModule stage) => stage.ParameterCount;

    /// <summary>"embeddings + blocks 0-1", "block 2", "blocks 2-3 + head": the GPT's layers are [embeddings, blocks, head].</summary>
    private static string LayerNames(StageModule piece, int blocks)
    {
        int first = piece.FirstLayer, end = piece.FirstLayer + piece.LayerCount; // layer indices [first, end)
        var parts = new List<string>();
        if (first == 0) parts.Add("embeddings");
        int b0 = Math.Max(first, 1) - 1, b1 = Math.Min(end, blocks + 1) - 2; // block numbers [b0, b1]
        if (b1 >= b0) parts.Add(b0 == b1 ? $"block {b0}" : $"blocks {b0}-{b1}");
        if (end == blocks + 2) parts.Add("head");
        return string.Join(" + ", parts);
    }

    private static string Mb(long bytes) => $"{bytes / 1e6:F2} MB";

    private static string S(int n) => n == 1 ? "" : "s";

    private static string Es(int n) => n == 1 ? "" : "es";

    private static string Duration(TimeSpan t) =>
        t.TotalMinutes >= 1 ? $"{(int)t.TotalMinutes} min {t.Seconds} s" : $"{t.TotalSeconds:F1} s";
}

using PipeSharp.Checkpoints;
using PipeSharp.Models;
using PipeSharp.Mpi;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.MpiRanks;

/// <summary>
/// Checkpoints across layouts under MPI. <c>checkpoint-write DIR</c>: one rank per process (as many ranks as processes)
/// trains a spec GPT 4 steps and saves. <c>checkpoint-resume DIR</c>: the same with this job's ranks, loaded from the
/// checkpoint (reading only the files of this process's layers), 4 more steps: the losses equal an uninterrupted
/// in-process run of 8 steps within 1e-6. Prints "rank R: wrote its layers" / "rank R: resumed as an uninterrupted run".
/// </summary>
internal static class CheckpointLayoutCheck
{
    private static readonly GptConfig Config = ConstructionCheck.Config;

    private static Pipeline NewPipe(int ranks, MpiCluster? cluster, long seed = 5) =>
        new(Gpt.Spec(Config, seed), new PipelineOptions { Ranks = ranks, MicroBatches = 4, Schedule = "1f1b", ThreadsPerRank = 1, Backend = cluster },
            Gpt.Loss, ps => optim.AdamW(ps, 3e-3));

    private static List<(Tensor X, Tensor Y)> Batches()
    {
        var gen = new Generator(3);
        return Enumerable.Range(0, 8).Select(_ =>
        {
            var tokens = randint(0, Config.VocabularySize, [8, Config.ContextLength + 1], generator: gen);
            return (tokens[.., ..Config.ContextLength], tokens[.., 1..]);
        }).ToList();
    }

    public static void Write(MpiCluster cluster, string directory)
    {
        var batches = Batches();
        using var pipe = NewPipe(cluster.Size, cluster);
        foreach (var (x, y) in batches.Take(4)) pipe.TrainStep(x, y);
        CheckpointStore.Save(directory, new CheckpointManifest { ModelKind = "gpt", ModelConfig = CheckpointManifest.ToJson(Config), Step = 4 }, pipe);
        Console.WriteLine($"rank {cluster.Rank}: wrote its layers ({cluster.Size} ranks)");
    }

    public static void Resume(MpiCluster cluster, string directory)
    {
        var batches = Batches();
        List<float> expected;
        using (var reference = NewPipe(cluster.Size, cluster: null)) // in this process, every rank a thread
            expected = batches.Select(b => reference.TrainStep(b.X, b.Y)).ToList();
        using var pipe = NewPipe(cluster.Size, cluster, seed: 99);
        using (var checkpoint = CheckpointStore.Load(directory))
        {
            checkpoint.ApplyTo(pipe, "gpt", CheckpointManifest.ToJson(Config));
            var own = pipe.Stages.SelectMany(s => Enumerable.Range(s.FirstLayer, s.LayerCount)).Select(i => $"layer-{i}.safetensors").Order().ToList();
            if (!checkpoint.FilesRead.Order().SequenceEqual(own))
                throw new InvalidOperationException(
                    $"rank {cluster.Rank}: read {string.Join(", ", checkpoint.FilesRead)} but holds only {string.Join(", ", own)}");
            if (checkpoint.Manifest.Ranks == cluster.Size)
                throw new InvalidOperationException($"rank {cluster.Rank}: the checkpoint was written by {checkpoint.Manifest.Ranks} ranks, as many as now: not a change of layout");
        }
        for (int k = 4; k < batches.Count; k++)
        {
            float loss = pipe.TrainStep(batches[k].X, batches[k].Y);
            if (Math.Abs(loss - expected[k]) > 1e-6)
                throw new InvalidOperationException($"rank {cluster.Rank}: step {k + 1}: loss {loss} after the resume, {expected[k]} uninterrupted");
        }
        Console.WriteLine($"rank {cluster.Rank}: resumed as an uninterrupted run ({cluster.Size} ranks)");
    }
}

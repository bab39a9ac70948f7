using System.Text.Json;
using PipeSharp.Checkpoints;
using PipeSharp.Data;
using PipeSharp.Models;
using PipeSharp.Runtime;

namespace PipeSharp.Training;

/// <summary>What a language-model checkpoint says about the run that saved it.</summary>
/// <param name="Config">The model's shape.</param>
/// <param name="Task">The task it was trained on.</param>
/// <param name="Tokenizer">The tokenizer of a text task (null for the sorting task).</param>
/// <param name="Step">Steps taken when it was saved.</param>
public sealed record LanguageModelCheckpointInfo(GptConfig Config, LanguageModelTaskSpec Task, TokenizerSpec? Tokenizer, long Step);

/// <summary>Saves and restores a <see cref="LanguageModelTrainer"/> with <see cref="CheckpointStore"/>.</summary>
public static class LanguageModelCheckpoint
{
    /// <summary>The model kind written into manifests.</summary>
    public const string ModelKind = "gpt";

    /// <summary>Saves the trainer's model, optimizer state, step and RNG state into a new checkpoint in <paramref name="directory"/>.</summary>
    public static CheckpointManifest Save(string directory, LanguageModelTrainer trainer, LanguageModelTaskSpec task, TokenizerSpec? tokenizer, int keep = 2) =>
        CheckpointStore.Save(directory, new CheckpointManifest
        {
            ModelKind = ModelKind,
            ModelConfig = CheckpointManifest.ToJson(trainer.Config),
            Tokenizer = tokenizer is null ? null : CheckpointManifest.ToJson(tokenizer),
            Step = trainer.Step,
            DataPosition = CheckpointManifest.ToJson(new { batch_index = trainer.Step, seed = trainer.Options.Seed }),
            TrainerState = CheckpointManifest.ToJson(task),
        }, trainer.Pipeline, keep);

    /// <summary>Reads what the newest checkpoint in <paramref name="directory"/> describes (and verifies its files).</summary>
    public static (LanguageModelCheckpointInfo Info, LoadedCheckpoint Loaded) Open(string directory)
    {
        var loaded = CheckpointStore.Load(directory);
        try
        {
            return (Describe(loaded), loaded);
        }
        catch
        {
            loaded.Dispose();
            throw;
        }
    }

    /// <summary>The run a loaded checkpoint came from.</summary>
    public static LanguageModelCheckpointInfo Describe(LoadedCheckpoint loaded)
    {
        var m = loaded.Manifest;
        if (m.ModelKind != ModelKind)
            throw new CheckpointMismatchException($"checkpoint {loaded.Path} holds a {m.ModelKind} model, not a {ModelKind} language model.");
        var config = m.ModelConfig.Deserialize<GptConfig>()
                     ?? throw new CheckpointCorruptException($"checkpoint {loaded.Path} has no model config.", loaded.Path, "manifest.json", []);
        var task = m.TrainerState?.Deserialize<LanguageModelTaskSpec>() ?? LanguageModelTaskSpec.Sorting();
        var tokenizer = m.Tokenizer?.Deserialize<TokenizerSpec>();
        return new LanguageModelCheckpointInfo(config, task, tokenizer, m.Step);
    }

    /// <summary>
    /// Continues <paramref name="trainer"/> from <paramref name="loaded"/>: checks that the model config is the same,
    /// loads parameters and optimizer state (re-split if the stage count differs), restores the RNG, sets the step.
    /// Nothing is changed if a check fails.
    /// </summary>
    public static void Resume(LanguageModelTrainer trainer, LoadedCheckpoint loaded)
    {
        loaded.ApplyTo(trainer.Pipeline, ModelKind, CheckpointManifest.ToJson(trainer.Config));
        trainer.Step = checked((int)loaded.Manifest.Step);
    }

    /// <summary>A pipeline holding the checkpoint's model for inference, on <paramref name="ranks"/> ranks (one stage each).</summary>
    public static Pipeline LoadForInference(LoadedCheckpoint loaded, int ranks)
    {
        var info = Describe(loaded);
        var model = Gpt.Create(info.Config);
        var pipe = new Pipeline(model, new PipelineOptions { Ranks = ranks, MicroBatches = 1, Schedule = "gpipe" },
            (o, t) => Gpt.Loss(o, t), ps => TorchSharp.torch.optim.SGD(ps, 0));
        try
        {
            pipe.LoadStateDict(loaded.ModelState);
            return pipe;
        }
        catch
        {
            pipe.Dispose();
            throw;
        }
    }
}

using PipeSharp.Checkpoints;
using PipeSharp.Data;
using PipeSharp.Generation;
using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>The language-model case study: training, resuming, generating. These set the global RNG, so they run alone.</summary>
[Collection(ProcessWideCollection.Name)]
public class LanguageModelTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "pipesharp-lm-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static string Shakespeare(int characters) => DataTests.Shakespeare()[..characters];

    private static CorpusTask SmallCorpus() => new(TextCorpus.FromText(Shakespeare(40_000)));

    private static GptConfig Small(int vocabulary) => new(vocabulary, ContextLength: 32, Layers: 2, Width: 32, Heads: 2);

    private static LanguageModelTrainingOptions Quick(int steps) => new()
    {
        Steps = steps, BatchSize = 8, LearningRate = 3e-3, MinLearningRate = 3e-4, WarmupSteps = 5, EvalEvery = 0, EvalBatches = 4, Seed = 11,
    };

    [Fact]
    public void Loss_falls_on_a_slice_of_tiny_shakespeare()
    {
        var task = SmallCorpus();
        using var trainer = new LanguageModelTrainer(Small(task.VocabularySize), task,
            new PipelineOptions { Ranks = 2, MicroBatches = 2, Schedule = "1f1b" }, Quick(150));
        double before = trainer.Evaluate(4);
        var summary = trainer.Run();
        Assert.True(Math.Abs(before - Math.Log(task.VocabularySize)) < 0.5, $"initial loss {before} should be near ln(vocabulary)");
        Assert.True(summary.ValidationLoss < before - 1.0, $"validation loss went from {before:F3} to {summary.ValidationLoss:F3}");
        Assert.Equal(2, summary.StageBusy.Count);
        Assert.All(summary.Memory!, m => Assert.True(m.ParameterBytes > 0));
    }

    [Fact]
    public void Resume_gives_bitwise_the_same_losses_as_an_uninterrupted_run()
    {
        var task = SmallCorpus();
        var spec = LanguageModelTaskSpec.Text("slice.txt");
        var options = new PipelineOptions { Ranks = 2, MicroBatches = 2, Schedule = "1f1b" };
        var uninterrupted = new List<float>();
        using (var trainer = new LanguageModelTrainer(Small(task.VocabularySize), task, options, Quick(12)))
        {
            trainer.Run(r => uninterrupted.Add(r.Loss), step =>
            {
                if (step == 6) LanguageModelCheckpoint.Save(_dir, trainer, spec, task.Corpus.Tokenizer.Spec);
            });
        }

        var resumed = new List<float>();
        var (info, loaded) = LanguageModelCheckpoint.Open(_dir);
        using (loaded)
        {
            Assert.Equal(6, info.Step);
            Assert.Equal("text", info.Task.Kind);
            Assert.Equal(task.Corpus.Tokenizer.Spec, info.Tokenizer);
            manual_seed(999); // the model is rebuilt from other weights; the checkpoint must replace them all
            using var trainer = new LanguageModelTrainer(info.Config, task, options, Quick(12) with { Seed = 11 });
            LanguageModelCheckpoint.Resume(trainer, loaded);
            trainer.Run(r => resumed.Add(r.Loss));
        }
        Assert.Equal(uninterrupted.Skip(6), resumed);
    }

    [Fact]
    public void Resume_with_another_number_of_stages_continues_the_same_trajectory()
    {
        var task = SmallCorpus();
        var spec = LanguageModelTaskSpec.Text("slice.txt");
        var losses = new List<float>();
        using (var trainer = new LanguageModelTrainer(Small(task.VocabularySize), task,
                   new PipelineOptions { Ranks = 2, MicroBatches = 2 }, Quick(10)))
        {
            trainer.Run(r => losses.Add(r.Loss), step =>
            {
                if (step == 5) LanguageModelCheckpoint.Save(_dir, trainer, spec, null);
            });
        }
        var (info, loaded) = LanguageModelCheckpoint.Open(_dir);
        using (loaded)
        using (var trainer = new LanguageModelTrainer(info.Config, task, new PipelineOptions { Ranks = 4, MicroBatches = 2, Schedule = "zb-h1" }, Quick(10)))
        {
            LanguageModelCheckpoint.Resume(trainer, loaded);
            var resumed = new List<float>();
            trainer.Run(r => resumed.Add(r.Loss));
            Assert.Equal(5, resumed.Count);
            for (int k = 0; k < 5; k++) Assert.True(Math.Abs(resumed[k] - losses[5 + k]) < 1e-5, $"step {6 + k}: {resumed[k]} vs {losses[5 + k]}");
        }
    }

    [Fact]
    public void A_checkpoint_from_another_model_config_is_refused_and_nothing_changes()
    {
        var task = SmallCorpus();
        using (var trainer = new LanguageModelTrainer(Small(task.VocabularySize), task, new PipelineOptions { Ranks = 2, MicroBatches = 2 }, Quick(2)))
        {
            trainer.Run();
            LanguageModelCheckpoint.Save(_dir, trainer, LanguageModelTaskSpec.Text("slice.txt"), null);
        }
        var (_, loaded) = LanguageModelCheckpoint.Open(_dir);
        using (loaded)
        using (var other = new LanguageModelTrainer(Small(task.VocabularySize) with { Width = 48 }, task,
                   new PipelineOptions { Ranks = 2, MicroBatches = 2 }, Quick(2)))
        {
            var before = other.Pipeline.StateDict();
            var e = Assert.Throws<CheckpointMismatchException>(() => LanguageModelCheckpoint.Resume(other, loaded));
            Assert.Contains("Width", e.Message);
            Assert.Equal(0, other.Step);
            foreach (var (name, value) in other.Pipeline.StateDict())
                Assert.True(value.equal(before[name]).all().item<bool>(), $"{name} changed");
        }
    }

    [Fact]
    public void Generation_is_the_same_for_any_number_of_stages()
    {
        var task = SmallCorpus();
        using (var trainer = new LanguageModelTrainer(Small(task.VocabularySize), task, new PipelineOptions { Ranks = 2, MicroBatches = 2 }, Quick(30)))
        {
            trainer.Run();
            LanguageModelCheckpoint.Save(_dir, trainer, LanguageModelTaskSpec.Text("slice.txt"), task.Corpus.Tokenizer.Spec);
        }
        var (info, loaded) = LanguageModelCheckpoint.Open(_dir);
        using (loaded)
        {
            var tokenizer = Tokenizers.FromSpec(info.Tokenizer!);
            var prompt = tokenizer.Encode("ROMEO:\n");
            var texts = new List<string>();
            foreach (int stages in new[] { 1, 2, 4 })
            {
                using var pipe = LanguageModelCheckpoint.LoadForInference(loaded, stages);
                var ids = TextGenerator.Generate(x => pipe.Forward(x), prompt, 60, info.Config.ContextLength, new TokenSampler(0.8, 20, seed: 7));
                texts.Add(tokenizer.Decode(ids));
            }
            // The whole model, unsplit, on this thread.
            using (var model = Gpt.Create(info.Config))
            {
                var state = loaded.ModelState;
                using (no_grad())
                    foreach (var (name, p) in model.named_parameters()) p.copy_(state[name]);
                model.eval();
                var ids = TextGenerator.Generate(x => model.forward(x), prompt, 60, info.Config.ContextLength, new TokenSampler(0.8, 20, seed: 7));
                texts.Add(tokenizer.Decode(ids));
            }
            Assert.All(texts, t => Assert.Equal(texts[0], t));
            Assert.Equal(60, texts[0].Length);

            using var other = LanguageModelCheckpoint.LoadForInference(loaded, 2);
            var different = tokenizer.Decode(TextGenerator.Generate(x => other.Forward(x), prompt, 60, info.Config.ContextLength, new TokenSampler(0.8, 20, seed: 8)));
            Assert.NotEqual(texts[0], different);
        }
    }

    [Fact]
    public void Sampler_is_greedy_at_temperature_zero_and_respects_top_k()
    {
        float[] logits = [0.1f, 2.0f, 1.9f, -1f];
        Assert.Equal(1, new TokenSampler(0, null, 1).Next(logits));
        var sampler = new TokenSampler(5.0, 2, 3);
        var drawn = Enumerable.Range(0, 200).Select(_ => sampler.Next(logits)).ToHashSet();
        Assert.Equal(new HashSet<int> { 1, 2 }, drawn);
    }
}

using PipeSharp.Checkpoints;
using PipeSharp.Data;
using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using PipeSharp.Training;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>
/// Under zb-h1 and zb-v the language-model trainer orders actions by F, I and W measured on a copy of the model. These
/// read the global RNG, so they run alone.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class ZeroBubbleCostsTests
{
    private static CorpusTask Task() => new(TextCorpus.FromText(DataTests.Shakespeare()[..40_000]));

    private static GptConfig Small(int vocabulary) => new(vocabulary, ContextLength: 32, Layers: 2, Width: 32, Heads: 2);

    private static LanguageModelTrainingOptions Quick(int steps) => new()
    {
        Steps = steps, BatchSize = 8, LearningRate = 3e-3, MinLearningRate = 3e-4, WarmupSteps = 2, EvalEvery = 0, EvalBatches = 2, Seed = 5,
    };

    [Theory]
    [InlineData("zb-v")]
    [InlineData("zb-h1")]
    public void Measured_costs_order_the_schedule_and_training_equals_the_order_of_equal_costs(string schedule)
    {
        var task = Task();
        var options = new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = schedule };
        using var measured = new LanguageModelTrainer(Small(task.VocabularySize), task, options, Quick(4));
        using var equal = new LanguageModelTrainer(Small(task.VocabularySize), task, options with { ScheduleCosts = ActionCosts.Unit }, Quick(4));

        var costs = measured.Pipeline.Options.ScheduleCosts;
        Assert.NotNull(costs);
        Assert.True(costs.Forward > 0 && costs.InputGrad > 0 && costs.WeightGrad > 0, costs.ToString());
        Assert.Equal(costs.InputGrad + costs.WeightGrad, costs.Backward, 12);

        var a = new List<float>();
        var b = new List<float>();
        measured.Run(r => a.Add(r.Loss));
        equal.Run(r => b.Add(r.Loss));
        for (int k = 0; k < a.Count; k++) Assert.Equal(b[k], a[k], 1e-5f);
        var x = measured.Pipeline.StateDict();
        var y = equal.Pipeline.StateDict();
        foreach (var (name, value) in x)
            Assert.True(value.allclose(y[name], rtol: 0, atol: 1e-5), $"{name} differs");
    }

    [Fact]
    public void Measuring_the_costs_leaves_the_global_random_state_as_it_was()
    {
        var task = Task();
        byte[] After(string schedule)
        {
            using var trainer = new LanguageModelTrainer(Small(task.VocabularySize), task, new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = schedule }, Quick(4));
            using var state = get_rng_state();
            return state.bytes.ToArray();
        }
        Assert.Equal(After("1f1b"), After("zb-v"));
    }

    [Fact]
    public void Costs_given_in_the_options_are_kept()
    {
        var task = Task();
        var given = new ActionCosts(1, 3, 2, 1);
        using var trainer = new LanguageModelTrainer(Small(task.VocabularySize), task,
            new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = "zb-v", ScheduleCosts = given }, Quick(4));
        Assert.Equal(given, trainer.Pipeline.Options.ScheduleCosts);
    }
}

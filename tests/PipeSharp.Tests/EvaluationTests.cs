using PipeSharp.Models;
using PipeSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>
/// <see cref="Pipeline.Evaluate(Tensor, Tensor, CancellationToken)"/>: the loss computed on the last stage equals the
/// loss of <see cref="Pipeline.Forward"/>'s output, for every kind of schedule, with replicas, with uneven and with
/// too few samples; the metric is weighted like the loss; modes are restored.
/// </summary>
public class EvaluationTests
{
    [Theory]
    [InlineData("1f1b", 3, 1, 4, 13)]
    [InlineData("gpipe", 2, 1, 3, 10)]
    [InlineData("interleaved", 2, 1, 4, 13)]
    [InlineData("zb-v", 2, 1, 3, 11)]
    [InlineData("1f1b", 2, 2, 3, 13)]
    [InlineData("interleaved", 2, 2, 2, 9)]
    [InlineData("zb-v", 2, 3, 2, 14)]
    [InlineData("1f1b", 2, 1, 4, 3)] // fewer samples than micro-batches
    [InlineData("zb-v", 2, 2, 2, 1)] // fewer samples than replicas
    public void Evaluate_equals_the_loss_of_forward(string schedule, int ranks, int replicas, int microBatches, int samples)
    {
        int copies = 0;
        using var pipe = new Pipeline(() => { manual_seed(10 + copies++); return Mlp.Create(16, 32, 6, linearLayers: 8); },
            new PipelineOptions { Ranks = ranks, Replicas = replicas, MicroBatches = microBatches, Schedule = schedule, ThreadsPerRank = 1 },
            EquivalenceTests.CrossEntropy, TestModels.Sgd);
        var g = new Generator(21);
        using var x = randn([samples, 16], generator: g);
        using var y = randint(0, 6, [samples], generator: g);

        float evaluated = pipe.Evaluate(x, y);
        using var output = pipe.Forward(x);
        float expected = EquivalenceTests.CrossEntropy(output, y).item<float>();
        Assert.True(Math.Abs(evaluated - expected) <= 1e-6 * Math.Max(1, Math.Abs(expected)), $"Evaluate {evaluated}, loss of Forward {expected}");
        Assert.True(expected > 0.5, $"a cross-entropy of 6 classes at initialisation is about 1.8, not {expected}");
    }

    [Fact]
    public void The_metric_is_weighted_by_micro_batch_sizes_like_the_loss()
    {
        manual_seed(5);
        using var model = Mlp.Create(16, 32, 6, linearLayers: 4);
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 3 }, EquivalenceTests.CrossEntropy, TestModels.Sgd);
        var g = new Generator(8);
        using var x = randn([10, 16], generator: g); // micro-batches of 4, 3 and 3 samples
        using var y = randint(0, 6, [10], generator: g);
        static Tensor Accuracy(Tensor output, Tensor target) => output.argmax(1).eq(target).to_type(ScalarType.Float32).mean();

        var result = pipe.Evaluate(x, y, Accuracy);
        using var output = pipe.Forward(x);
        Assert.Equal(Accuracy(output, y).item<float>(), result.Metric!.Value, 6);
        Assert.Equal(EquivalenceTests.CrossEntropy(output, y).item<float>(), result.Loss, 6);
        Assert.Null(pipe.Evaluate(x, y, null).Metric);
    }

    [Fact]
    public void Evaluate_runs_in_eval_mode_and_restores_every_modules_mode()
    {
        var config = new GptConfig(VocabularySize: 40, ContextLength: 8, Layers: 2, Width: 16, Heads: 2, Dropout: 0.5);
        manual_seed(3);
        using var model = Gpt.Create(config);
        var g = new Generator(4);
        using var x = randint(0, 40, [6, 8], generator: g);
        using var y = randint(0, 40, [6, 8], generator: g);
        float expected;
        model.eval();
        using (no_grad()) expected = Gpt.Loss(model.forward(x), y).item<float>(); // no dropout
        model.train();
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 3 }, Gpt.Loss, TestModels.Sgd);

        Assert.Equal(expected, pipe.Evaluate(x, y), 5);
        Assert.Equal(expected, pipe.Evaluate(x, y), 5); // the same again: no dropout mask drawn
        Assert.DoesNotContain(false, pipe.Stages.SelectMany(s => new[] { (nn.Module)s }.Concat(s.modules())).Select(m => m.training));
    }

    [Fact]
    public void A_metric_of_more_than_one_value_is_refused_naming_the_stage()
    {
        using var pipe = new Pipeline(TestModels.Layers(2), new PipelineOptions { Ranks = 2, MicroBatches = 2 }, TestModels.Mse, TestModels.Sgd);
        using var x = randn(4, 16);
        var e = Assert.Throws<PipelineStageException>(() => pipe.Evaluate(x, randn(4, 16), (o, t) => (o - t).abs()));
        Assert.Contains("the metric must give one value per micro-batch", e.Message);
        Assert.Contains("Stage 1", e.Message);
        Assert.Throws<ArgumentException>(() => pipe.Evaluate(x, randn(3, 16)));
        Assert.Equal(TestModels.Mse(pipe.Forward(x), zeros(4, 16)).item<float>(), pipe.Evaluate(x, zeros(4, 16)), 5); // still usable
    }
}

using PipeSharp.Checkpoints;
using PipeSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>
/// A step whose loss or gradient norm is NaN or infinite changes no parameter: by default it throws naming the step,
/// or with <see cref="NonFiniteGradientPolicy.SkipStep"/> it is skipped and training goes on.
/// </summary>
public class NonFiniteTests
{
    // Two stages; the first layer of stage 0 turns marked samples into NaN (and so the loss and every gradient).
    private static (Pipeline Pipe, List<nn.Module<Tensor, Tensor>> Layers) Make(NonFiniteGradientPolicy policy, double? maxGradNorm = null,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? scheduler = null)
    {
        var layers = TestModels.Layers(3, new NaNForMarkedSamples(), at: 0);
        var pipe = new Pipeline(layers, new PipelineOptions { Balance = [2, 2], MicroBatches = 2, MaxGradNorm = maxGradNorm, NonFiniteGradients = policy },
            TestModels.Mse, ps => optim.Adam(ps, 0.01), scheduler);
        return (pipe, layers);
    }

    private static (Tensor X, Tensor Y) Batch(int seed, bool marked)
    {
        manual_seed(seed);
        var x = randn(8, 16);
        var y = randn(8, 16);
        if (marked) x[5, 0] = tensor(NaNForMarkedSamples.Marker); // a sample of the second micro-batch
        return (x, y);
    }

    private static Dictionary<string, Tensor> Parameters(Pipeline pipe) => pipe.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());

    private static void AssertEqual(Dictionary<string, Tensor> expected, Pipeline pipe)
    {
        var actual = pipe.StateDict();
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, value) in expected) Assert.True(value.equal(actual[name]).all().item<bool>(), $"{name} changed");
    }

    [Theory]
    [InlineData(null)]
    [InlineData(1.0)]
    public void A_nan_loss_throws_naming_the_step_and_changes_no_parameter_or_optimizer_state(double? maxGradNorm)
    {
        var (pipe, _) = Make(NonFiniteGradientPolicy.Throw, maxGradNorm);
        using var _pipe = pipe;
        var (x, y) = Batch(1, marked: false);
        pipe.TrainStep(x, y);
        var parameters = Parameters(pipe);
        var optimizerState = pipe.OptimizerState().ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());

        var (bad, badTarget) = Batch(2, marked: true);
        var e = Assert.Throws<NonFiniteGradientException>(() => pipe.TrainStep(bad, badTarget));
        Assert.Equal(2, e.Step);
        Assert.True(double.IsNaN(e.Loss));
        Assert.True(double.IsNaN(e.GradientNorm));
        Assert.Contains("training step 2", e.Message);
        Assert.Contains("NonFiniteGradients = SkipStep", e.Message);
        AssertEqual(parameters, pipe);
        var after = pipe.OptimizerState();
        Assert.Equal(optimizerState.Keys.Order(), after.Keys.Order());
        foreach (var (name, bytes) in optimizerState) Assert.Equal(bytes, after[name]);

        // The pipeline goes on: the next good step trains.
        float loss = pipe.TrainStep(x, y);
        Assert.True(float.IsFinite(loss));
        Assert.Contains(pipe.StateDict(), kv => !kv.Value.equal(parameters[kv.Key]).all().item<bool>());
    }

    [Fact]
    public void With_skip_step_the_step_is_skipped_and_training_goes_on_with_finite_parameters()
    {
        var (pipe, _) = Make(NonFiniteGradientPolicy.SkipStep, scheduler: o => optim.lr_scheduler.StepLR(o, step_size: 1, gamma: 0.5));
        using var _pipe = pipe;
        var (x, y) = Batch(1, marked: false);
        pipe.TrainStep(x, y);
        Assert.False(pipe.LastStep!.Skipped);
        var parameters = Parameters(pipe);
        double rate = pipe.Stages[0].parameters().Any() ? LearningRate(pipe) : 0;

        var (bad, badTarget) = Batch(2, marked: true);
        float skipped = pipe.TrainStep(bad, badTarget);
        Assert.True(float.IsNaN(skipped));
        Assert.True(pipe.LastStep!.Skipped);
        AssertEqual(parameters, pipe);
        Assert.Equal(rate, LearningRate(pipe)); // the scheduler did not step either
        Assert.All(pipe.Stages.SelectMany(s => s.parameters()), p => Assert.True(p.grad is null || p.grad.count_nonzero().item<long>() == 0));

        for (int k = 0; k < 3; k++)
        {
            Assert.True(float.IsFinite(pipe.TrainStep(x, y)));
            Assert.False(pipe.LastStep!.Skipped);
        }
        Assert.All(pipe.StateDict(), kv => Assert.True(isfinite(kv.Value).all().item<bool>(), kv.Key));
        Assert.Contains(pipe.StateDict(), kv => !kv.Value.equal(parameters[kv.Key]).all().item<bool>());
    }

    [Fact]
    public void A_nan_in_one_data_parallel_replica_is_seen_by_every_replica()
    {
        // Two replicas of two stages in this process: the marked sample is in the second replica's half of the batch.
        var policy = NonFiniteGradientPolicy.SkipStep;
        using var pipe = new Pipeline(() => nn.Sequential(TestModels.Layers(3, new NaNForMarkedSamples(), at: 0).Select((l, i) => ($"{i}", l)).ToArray()),
            new PipelineOptions { Balance = [2, 2], MicroBatches = 2, Replicas = 2, NonFiniteGradients = policy },
            TestModels.Mse, ps => optim.Adam(ps, 0.01));
        var parameters = Parameters(pipe);
        var (bad, badTarget) = Batch(2, marked: true); // sample 5: replica 1 takes samples 4..7
        Assert.True(float.IsNaN(pipe.TrainStep(bad, badTarget)));
        Assert.True(pipe.LastStep!.Skipped);
        AssertEqual(parameters, pipe);
        foreach (var replica in pipe.Replicas)
            foreach (var stage in replica.Local)
                Assert.All(stage.Module.parameters(), p => Assert.True(isfinite(p).all().item<bool>()));
    }

    private static double LearningRate(Pipeline pipe) => pipe.Replicas[0].Local.First().Optimizer.ParamGroups.First().LearningRate;
}

using System.Diagnostics;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>A failure in any stage stops every stage promptly and reaches the caller with its stage and micro-batch.</summary>
public class FailureTests
{
    [Theory]
    [InlineData("gpipe", 0, 0)]
    [InlineData("1f1b", 0, 0)]
    [InlineData("gpipe", 1, 3)]
    [InlineData("1f1b", 1, 3)]
    [InlineData("1f1b", 3, 7)]
    [InlineData("gpipe", 3, 5)]
    public void Forward_failure_names_stage_and_micro_batch_and_stops_every_stage(string schedule, int failingStage, int failingMicroBatch)
    {
        // Four stages of two layers; the throwing layer is the first layer of failingStage.
        var layers = TestModels.Layers(7, new ThrowingLayer(throwOnCall: failingMicroBatch, "boom"), at: 2 * failingStage);
        using var pipe = new Pipeline(layers, new PipelineOptions { Balance = [2, 2, 2, 2], MicroBatches = 8, Schedule = schedule },
            TestModels.Mse, TestModels.Sgd);
        var before = layers[^1].parameters().First().detach().clone();

        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<PipelineStageException>(() => pipe.TrainStep(randn(32, 16), randn(32, 16)));
        clock.Stop();

        Assert.Equal(failingStage, e.Stage);
        Assert.Equal(failingMicroBatch, e.MicroBatch);
        Assert.Equal(Schedules.ActionKind.Forward, e.Action.Kind);
        var inner = Assert.IsType<InvalidOperationException>(e.InnerException);
        Assert.Equal("boom", inner.Message);
        Assert.Contains($"Stage {failingStage}", e.Message);
        Assert.Contains($"micro-batch {failingMicroBatch}", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"took {clock.Elapsed}");
        // No optimizer step ran: parameters are unchanged.
        Assert.Equal(0, (layers[^1].parameters().First().detach() - before).abs().max().item<float>());
    }

    [Fact]
    public void Loss_failure_is_reported_from_the_last_stage()
    {
        var layers = TestModels.Layers(4);
        using var pipe = new Pipeline(layers, new PipelineOptions { Ranks = 2, MicroBatches = 4 },
            (o, t) => throw new ArithmeticException("bad loss"), TestModels.Sgd);
        var e = Assert.Throws<PipelineStageException>(() => pipe.TrainStep(randn(8, 16), randn(8, 16)));
        Assert.Equal(1, e.Stage);
        Assert.Equal(0, e.MicroBatch);
        Assert.IsType<ArithmeticException>(e.InnerException);
    }

    [Fact]
    public void Mismatched_shapes_between_stages_name_the_stage()
    {
        manual_seed(0);
        var layers = new List<nn.Module<Tensor, Tensor>> { nn.Linear(16, 32), nn.Linear(33, 4) };
        using var pipe = new Pipeline(layers, new PipelineOptions { Ranks = 2, MicroBatches = 2 }, TestModels.Mse, TestModels.Sgd);
        var e = Assert.Throws<PipelineStageException>(() => pipe.TrainStep(randn(4, 16), randn(4, 4)));
        Assert.Equal(1, e.Stage);
        Assert.Equal(0, e.MicroBatch);
    }

    [Fact]
    public void Pipeline_recovers_after_a_failed_step()
    {
        var layers = TestModels.Layers(3, new ThrowingLayer(throwOnCall: 1), at: 2);
        using var pipe = new Pipeline(layers, new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = "1f1b" },
            TestModels.Mse, TestModels.Sgd);
        Assert.Throws<PipelineStageException>(() => pipe.TrainStep(randn(8, 16), randn(8, 16)));
        // The failed step left nothing behind: the next steps run normally and give a finite loss.
        for (int i = 0; i < 3; i++) Assert.True(float.IsFinite(pipe.TrainStep(randn(8, 16), randn(8, 16))));
    }

    [Fact]
    public void Cancellation_stops_a_running_step_promptly()
    {
        var layers = TestModels.Layers(3, new SlowLayer(200), at: 3);
        using var pipe = new Pipeline(layers, new PipelineOptions { Ranks = 2, MicroBatches = 8 }, TestModels.Mse, TestModels.Sgd);
        using var cancel = new CancellationTokenSource();
        var clock = Stopwatch.StartNew();
        TimeSpan cancelledAt = TimeSpan.Zero;
        using var registration = cancel.Token.Register(() => cancelledAt = clock.Elapsed);
        // A dedicated thread, not a timer: a timer fires on the thread pool, which parallel tests can starve.
        new Thread(() => { Thread.Sleep(300); cancel.Cancel(); }) { IsBackground = true }.Start();
        Assert.ThrowsAny<OperationCanceledException>(() => pipe.TrainStep(randn(16, 16), randn(16, 16), cancel.Token));
        // 8 micro-batches would take 1.6 s on the slow stage; it stops after the 200 ms action in flight.
        var afterCancel = clock.Elapsed - cancelledAt;
        Assert.True(cancelledAt > TimeSpan.Zero && afterCancel < TimeSpan.FromMilliseconds(700), $"stopped {afterCancel} after the cancellation");
    }

    [Fact]
    public void A_cancellation_during_the_optimizer_step_lets_every_stage_finish_it()
    {
        manual_seed(3);
        var layers = TestModels.Layers(4);
        using var cancel = new CancellationTokenSource();
        // The scheduler steps right after its stage's optimizer: the first stage to get there cancels the step.
        using var pipe = new Pipeline(layers, new PipelineOptions { Ranks = 2, MicroBatches = 2 }, TestModels.Mse, TestModels.Sgd,
            opt => optim.lr_scheduler.LambdaLR(opt, epoch =>
            {
                if (epoch >= 1) cancel.Cancel();
                return 1.0;
            }));
        var before = layers.SelectMany(l => l.parameters()).Select(p => p.detach().clone()).ToList();

        float loss = pipe.TrainStep(randn(4, 16), randn(4, 16), cancel.Token); // completes: every stage stepped
        Assert.True(float.IsFinite(loss));
        var after = layers.SelectMany(l => l.parameters()).Select(p => p.detach().clone()).ToList();
        Assert.Equal(before.Count, after.Count);
        Assert.All(Enumerable.Range(0, before.Count), k => Assert.True((before[k] - after[k]).abs().max().item<float>() > 0, $"parameter {k} was not stepped"));

        // The cancellation takes effect at the next step, before anything changes.
        var e = Assert.ThrowsAny<OperationCanceledException>(() => pipe.TrainStep(randn(4, 16), randn(4, 16), cancel.Token));
        Assert.Contains("no parameter was changed", e.Message);
        var unchanged = layers.SelectMany(l => l.parameters()).Select(p => p.detach().clone()).ToList();
        Assert.All(Enumerable.Range(0, after.Count), k => Assert.Equal(0, (after[k] - unchanged[k]).abs().max().item<float>()));
    }

    [Fact]
    public void Dispose_ends_the_worker_threads()
    {
        var layers = TestModels.Layers(4);
        var pipe = new Pipeline(layers, new PipelineOptions { Ranks = 4, MicroBatches = 2 }, TestModels.Mse, TestModels.Sgd);
        pipe.TrainStep(randn(4, 16), randn(4, 16));
        Assert.Equal(4, pipe.LiveWorkerThreads);
        var clock = Stopwatch.StartNew();
        pipe.Dispose();
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2));
        Assert.Throws<ObjectDisposedException>(() => pipe.TrainStep(randn(4, 16), randn(4, 16)));
        Assert.Equal(0, pipe.LiveWorkerThreads);
    }
}

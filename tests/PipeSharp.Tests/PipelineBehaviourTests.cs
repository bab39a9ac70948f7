using PipeSharp.Models;
using PipeSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

public class PipelineBehaviourTests
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 4)]
    [InlineData(5, 3)]
    public void Forward_equals_the_unsplit_model(int stages, int microBatches)
    {
        manual_seed(4);
        using var model = Mlp.Create(16, 32, 6, 5);
        var x = randn(11, 16);
        Tensor expected;
        using (no_grad()) expected = model.forward(x);
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = stages, MicroBatches = microBatches },
            EquivalenceTests.CrossEntropy, TestModels.Sgd);
        var actual = pipe.Forward(x);
        Assert.Equal(expected.shape, actual.shape);
        Assert.True((expected - actual).abs().max().item<float>() < 1e-6);
        Assert.False(actual.requires_grad);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Forward_takes_a_batch_smaller_than_the_micro_batch_count(int samples)
    {
        manual_seed(5);
        using var model = Mlp.Create(16, 32, 6, 5);
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = "zb-v" },
            EquivalenceTests.CrossEntropy, TestModels.Sgd);
        var x = randn(samples, 16);
        var actual = pipe.Forward(x);
        Tensor expected;
        using (no_grad()) expected = model.forward(x);
        Assert.Equal(expected.shape, actual.shape);
        Assert.True((expected - actual).abs().max().item<float>() < 1e-6);
        // Training still needs a sample per micro-batch.
        Assert.Throws<ArgumentException>(() => pipe.TrainStep(x, zeros(samples, dtype: ScalarType.Int64)));
    }

    [Fact]
    public void Uneven_micro_batches_match_single_device()
    {
        var batches = EquivalenceTests.Batches([16], 6, batchSize: 13);
        double diff = Verification.EquivalenceCheck.MaxParameterDifference(
            () => { manual_seed(1); return Mlp.Create(16, 32, 6, 4); },
            new PipelineOptions { Ranks = 2, MicroBatches = 5 }, EquivalenceTests.Optimizer("adam"),
            EquivalenceTests.CrossEntropy, batches);
        Assert.True(diff <= 1e-5, $"diff {diff}");
    }

    [Fact]
    public void Learning_rate_scheduler_steps_every_stage_like_single_device()
    {
        var batches = EquivalenceTests.Batches([16], 6, batchSize: 16, steps: 6);
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> sgd = ps => optim.SGD(ps, 0.1);

        using var reference = Mlp.Create(16, 32, 6, 4);
        using var model = Mlp.Create(16, 32, 6, 4);
        Verification.EquivalenceCheck.CopyParameters(reference, model); // same initial weights
        var opt = sgd(reference.parameters());
        var sched = optim.lr_scheduler.StepLR(opt, step_size: 2, gamma: 0.1);
        foreach (var (x, y) in batches)
        {
            opt.zero_grad();
            EquivalenceTests.CrossEntropy(reference.forward(x), y).backward();
            opt.step();
            sched.step();
        }

        using (var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 4 },
                   EquivalenceTests.CrossEntropy, sgd, o => optim.lr_scheduler.StepLR(o, step_size: 2, gamma: 0.1)))
        {
            foreach (var (x, y) in batches) pipe.TrainStep(x, y);
        }
        Assert.True(Verification.EquivalenceCheck.MaxDifference(reference, model) <= 1e-6);
    }

    [Fact]
    public void Loss_falls_and_step_statistics_are_reported()
    {
        manual_seed(5);
        using var model = Mlp.Create(16, 64, 4, 4);
        using var data = new SyntheticClassification([16], 4, seed: 1);
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = "1f1b" },
            EquivalenceTests.CrossEntropy, ps => optim.Adam(ps, 3e-3));
        var losses = new List<float>();
        for (int i = 0; i < 150; i++)
        {
            var (x, y) = data.NextBatch(64);
            losses.Add(pipe.TrainStep(x, y));
            x.Dispose();
            y.Dispose();
        }
        Assert.True(losses.Skip(140).Average() < 0.6 * losses.Take(10).Average(),
            $"loss went from {losses.Take(10).Average()} to {losses.Skip(140).Average()}");

        var stats = pipe.LastStep!;
        Assert.Equal(2, stats.StageBusyFraction.Count);
        Assert.All(stats.StageBusyFraction, f => Assert.InRange(f, 0.0, 1.0));
        Assert.True(stats.StageBusySeconds.All(b => b > 0));
        Assert.Equal(16, stats.Timeline.Count); // 2 stages x 4 micro-batches x (F + B)
        Assert.All(stats.Timeline, t => Assert.True(t.End >= t.Start));
    }

    [Fact]
    public void Each_stage_computes_with_its_own_intra_op_thread_count()
    {
        int seen = -1;
        var layers = TestModels.Layers(2);
        using var pipe = new Pipeline(layers, new PipelineOptions { Ranks = 2, MicroBatches = 2, ThreadsPerRank = 1 },
            (o, t) => { seen = get_num_threads(); return TestModels.Mse(o, t); }, TestModels.Sgd);
        int before = get_num_threads();
        try
        {
            set_num_threads(2); // a caller's setting must not leak into the workers
            pipe.TrainStep(randn(4, 16), randn(4, 16));
        }
        finally
        {
            set_num_threads(before);
        }
        Assert.Equal(1, seen);
    }

    [Fact]
    public void Forward_leaves_every_module_in_the_mode_it_was_in()
    {
        var layers = TestModels.Layers(4);
        using var pipe = new Pipeline(layers, new PipelineOptions { Ranks = 2, MicroBatches = 2 }, TestModels.Mse, TestModels.Sgd);
        pipe.Stages[0].eval();                                   // a whole stage in eval mode
        ((nn.Module)layers[3]).children().First().eval();        // one submodule of stage 1 (its Linear)
        List<bool> Modes() => pipe.Stages.SelectMany(s => new[] { (nn.Module)s }.Concat(s.modules())).Select(m => m.training).ToList();
        var before = Modes();
        Assert.Contains(true, before);
        Assert.Contains(false, before);

        pipe.Forward(randn(4, 16)).Dispose();
        Assert.Equal(before, Modes());

        foreach (var s in pipe.Stages) s.eval();
        pipe.Forward(randn(4, 16)).Dispose();
        Assert.DoesNotContain(true, Modes());
    }
}

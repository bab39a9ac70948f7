using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using PipeSharp.Verification;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>
/// Data parallelism in one process (replicas as thread groups): each replica takes its share of the batch, gradients
/// are summed over replicas, and training still equals single-device training on the whole batch.
/// </summary>
public class DataParallelTests
{
    private const double Tolerance = 1e-5;

    public static TheoryData<string, int, int, int> Cases()
    {
        var data = new TheoryData<string, int, int, int>();
        foreach (var schedule in ScheduleGenerators.Names)
        {
            data.Add(schedule, 2, 2, 4);
            data.Add(schedule, 2, 3, 2); // batch 16 over 3 replicas: shares of 6, 5 and 5 samples
        }
        data.Add("1f1b", 1, 4, 2);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Replicas_match_single_device_training_on_the_whole_batch(string schedule, int stages, int replicas, int microBatches)
    {
        var batches = EquivalenceTests.Batches([16], 6, batchSize: 16);
        double diff = EquivalenceCheck.MaxParameterDifference(
            () => { manual_seed(1); return Mlp.Create(16, 32, 6, linearLayers: 10); },
            new PipelineOptions { Ranks = stages, Replicas = replicas, MicroBatches = microBatches, Schedule = schedule, ThreadsPerRank = 1 },
            EquivalenceTests.Optimizer("adam"), EquivalenceTests.CrossEntropy, batches);
        Assert.True(diff <= Tolerance, $"max parameter difference {diff:E2} > {Tolerance:E0}");
    }

    [Fact]
    public void A_forward_of_fewer_samples_than_replicas_gives_the_single_device_output()
    {
        // One sequence to continue, as when generating text after training with replicas.
        manual_seed(2);
        using var reference = Mlp.Create(16, 32, 6, linearLayers: 4);
        int copies = 0;
        using var pipe = new Pipeline(() => { if (copies++ == 0) { manual_seed(2); } return Mlp.Create(16, 32, 6, linearLayers: 4); },
            new PipelineOptions { Ranks = 2, Replicas = 2, MicroBatches = 4, ThreadsPerRank = 1 },
            EquivalenceTests.CrossEntropy, ps => optim.SGD(ps, 0.1));
        using var one = randn(1, 16);
        reference.eval();
        using var expected = reference.forward(one);
        using var actual = pipe.Forward(one);
        Assert.Equal([1L, 6], actual.shape);
        Assert.True(allclose(expected, actual, rtol: 1e-5, atol: 1e-6), "the pipelined forward of one sample differs from the model's");
    }

    [Fact]
    public void Replicas_of_a_tied_gpt_keep_identical_copies_and_match_single_device()
    {
        var config = new GptConfig(VocabularySize: 13, ContextLength: 8, Layers: 4, Width: 16, Heads: 2);
        var gen = new Generator(5);
        var batches = Enumerable.Range(0, 4).Select(_ =>
        {
            var tokens = randint(0, 13, [8, 9], generator: gen);
            return (tokens[.., ..8], tokens[.., 1..]);
        }).ToList();
        var (diff, drift) = EquivalenceCheck.Compare(
            () => { manual_seed(3); return Gpt.Create(config); },
            new PipelineOptions { Ranks = 2, Replicas = 2, MicroBatches = 2, ThreadsPerRank = 1 },
            ps => optim.AdamW(ps, 1e-3), Gpt.Loss, batches);
        Assert.True(diff <= Tolerance, $"max parameter difference {diff:E2} > {Tolerance:E0}");
        Assert.Equal(0, drift);
    }

    [Fact]
    public void Replicas_start_from_the_first_replicas_values_and_stay_identical()
    {
        int made = 0;
        using var pipe = new Pipeline(() => { manual_seed(made++); return Mlp.Create(8, 16, 4, linearLayers: 4); },
            new PipelineOptions { Ranks = 2, Replicas = 2, MicroBatches = 2, ThreadsPerRank = 1 },
            EquivalenceTests.CrossEntropy, ps => optim.SGD(ps, 0.1));
        Assert.Equal(2, made); // differently seeded copies ...
        var (x, y) = EquivalenceTests.Batches([8], 4, batchSize: 8)[0];
        pipe.TrainStep(x, y);
        var replicas = ReplicaParameters(pipe);
        for (int k = 0; k < replicas[0].Count; k++)
            Assert.True((replicas[0][k] == replicas[1][k]).all().item<bool>(), $"parameter {k} differs between the replicas"); // ... made equal
    }

    [Fact]
    public void A_single_model_with_replicas_in_one_process_is_refused_naming_the_factory_constructor()
    {
        using var model = Mlp.Create(8, 16, 4, linearLayers: 4);
        var e = Assert.Throws<ArgumentException>(() => new Pipeline(model,
            new PipelineOptions { Ranks = 2, Replicas = 2 }, EquivalenceTests.CrossEntropy, ps => optim.SGD(ps, 0.1)));
        Assert.Equal("replicas", e.ParamName);
        Assert.Contains("Func<Sequential>", e.Message);
    }

    [Fact]
    public void A_batch_too_small_for_every_replicas_micro_batches_is_refused_before_work()
    {
        using var pipe = new Pipeline(() => Mlp.Create(8, 16, 4, linearLayers: 4),
            new PipelineOptions { Ranks = 2, Replicas = 2, MicroBatches = 4, ThreadsPerRank = 1 },
            EquivalenceTests.CrossEntropy, ps => optim.SGD(ps, 0.1));
        using var x = randn(6, 8);
        using var y = randint(0, 4, [6]);
        var e = Assert.Throws<ArgumentException>(() => pipe.TrainStep(x, y));
        Assert.Contains("at least 8 samples", e.Message);
    }

    [Fact]
    public void Zero_replicas_is_refused()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new Pipeline(() => Mlp.Create(8, 16, 4, linearLayers: 4),
            new PipelineOptions { Ranks = 2, Replicas = 0 }, EquivalenceTests.CrossEntropy, ps => optim.SGD(ps, 0.1)));
        Assert.Equal("replicas", e.ParamName);
    }

    // Each replica's parameters in model order.
    private static List<List<Tensor>> ReplicaParameters(Pipeline pipe) =>
        pipe.Replicas.Select(r => r.Local.SelectMany(s => s.Module.parameters()).Select(p => (Tensor)p).ToList()).ToList();
}

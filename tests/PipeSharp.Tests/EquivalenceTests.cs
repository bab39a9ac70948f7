using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using PipeSharp.Verification;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>Pipelined training gives the parameters of plain single-device training (float32 round-off).</summary>
public class EquivalenceTests
{
    private const double Tolerance = 1e-5;
    private const int Steps = 5;

    public static TheoryData<string, string, int, int> MlpCases() => Cases([1, 2, 4, 5]);

    // The ConvNet has 10 convolution layers and a head (11 layers); 5 stages is the article's 2,2,2,2,3 split.
    public static TheoryData<string, string, int, int> CnnCases() => Cases([1, 2, 4, 5]);

    // Every schedule; interleaved needs the micro-batch count to be a multiple of the stage count.
    private static TheoryData<string, string, int, int> Cases(int[] stages)
    {
        var data = new TheoryData<string, string, int, int>();
        foreach (var optimizer in new[] { "sgd", "adam" })
            foreach (var schedule in ScheduleGenerators.Names)
                foreach (var p in stages)
                    foreach (var m in new[] { 1, 2, 4, 8 })
                        if (schedule != "interleaved" || m % p == 0)
                            data.Add(optimizer, schedule, p, m);
        return data;
    }

    [Theory]
    [MemberData(nameof(MlpCases))]
    public void Mlp_matches_single_device(string optimizer, string schedule, int stages, int microBatches)
    {
        var batches = Batches([16], 6, batchSize: 16);
        double diff = EquivalenceCheck.MaxParameterDifference(
            () => { manual_seed(1); return Mlp.Create(16, 32, 6, linearLayers: 10); },
            new PipelineOptions { Ranks = stages, MicroBatches = microBatches, Schedule = schedule, ThreadsPerRank = 1 },
            Optimizer(optimizer), CrossEntropy, batches);
        Assert.True(diff <= Tolerance, $"max parameter difference {diff:E2} > {Tolerance:E0}");
    }

    [Theory]
    [MemberData(nameof(CnnCases))]
    public void ConvNet_matches_single_device(string optimizer, string schedule, int stages, int microBatches)
    {
        var batches = Batches([3, 8, 8], 10, batchSize: 16);
        // One chunk per stage: the article's split (conv layers spread evenly, head on the last stage);
        // two chunks per stage (interleaved, zb-v): balanced by parameter count.
        bool oneChunk = ScheduleGenerators.StagesPerRank(schedule, null) == 1;
        var options = new PipelineOptions
        {
            Ranks = stages, Balance = oneChunk ? ConvNet.ConvBalance(10, stages) : null,
            MicroBatches = microBatches, Schedule = schedule, ThreadsPerRank = 1,
        };
        double diff = EquivalenceCheck.MaxParameterDifference(
            () => { manual_seed(2); return ConvNet.Create(inChannels: 3, channels: 4, convLayers: 10, classes: 10); },
            options, Optimizer(optimizer), CrossEntropy, batches);
        Assert.True(diff <= Tolerance, $"max parameter difference {diff:E2} > {Tolerance:E0}");
    }

    public static TheoryData<string, int, int> GptCases()
    {
        var data = new TheoryData<string, int, int>();
        foreach (var schedule in ScheduleGenerators.Names)
            foreach (var (p, m) in new[] { (2, 4), (3, 3), (1, 2) })
                if (schedule != "interleaved" || m % p == 0)
                    data.Add(schedule, p, m);
        return data;
    }

    [Theory]
    [MemberData(nameof(GptCases))]
    public void Gpt_matches_single_device(string schedule, int stages, int microBatches)
    {
        var config = new GptConfig(VocabularySize: 11, ContextLength: 8, Layers: 4, Width: 16, Heads: 2);
        var gen = new Generator(5);
        var batches = Enumerable.Range(0, 3).Select(_ =>
        {
            var tokens = randint(0, 11, [6, 9], generator: gen);
            return (tokens[.., ..8], tokens[.., 1..]);
        }).ToList();
        double diff = EquivalenceCheck.MaxParameterDifference(
            () => Gpt.Create(config),
            new PipelineOptions { Ranks = stages, MicroBatches = microBatches, Schedule = schedule, ThreadsPerRank = 1 },
            ps => optim.AdamW(ps, 1e-3), Gpt.Loss, batches);
        Assert.True(diff <= Tolerance, $"max parameter difference {diff:E2} > {Tolerance:E0}");
    }

    internal static Tensor CrossEntropy(Tensor output, Tensor target) => nn.functional.cross_entropy(output, target);

    internal static Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> Optimizer(string name) => name switch
    {
        "sgd" => ps => optim.SGD(ps, 0.05, momentum: 0.9),
        "adam" => ps => optim.Adam(ps, 1e-3),
        _ => throw new ArgumentException(name),
    };

    internal static List<(Tensor, Tensor)> Batches(long[] sampleShape, int classes, int batchSize, int steps = Steps)
    {
        using var task = new SyntheticClassification(sampleShape, classes, seed: 7);
        return Enumerable.Range(0, steps).Select(_ => task.NextBatch(batchSize)).ToList();
    }
}

using PipeSharp.Memory;
using PipeSharp.Models;
using PipeSharp.Runtime;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Memory;

/// <summary>
/// In one process the ranks are threads sharing one native heap: the measured peak of the process during training
/// agrees with the ranks' predicted peaks together (each rank's held peak, plus the largest moment's extra of one) within 15%, for a GPT whose memory is mostly activations and for
/// an MLP whose memory is mostly parameters and AdamW state. Runs alone: other tests would allocate in the same heap.
/// (GPipe is predicted about 15% above its measured peak, see docs/memory.md, and is left out of the 15% check.)
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class PredictionAgreementTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("1f1b", 2, 4)]
    [InlineData("zb-h1", 2, 4)]
    public void The_measured_peak_of_a_gpt_agrees_with_the_prediction_within_15_percent(string schedule, int ranks, int microBatches)
    {
        if (!OperatingSystem.IsLinux()) return; // the heap is read through glibc
        var (made, input, target) = MemoryTestGpt.Create(16);
        using var model = made;
        using var x = input;
        using var y = target;
        using var pipe = new Pipeline(model,
            new PipelineOptions { Ranks = ranks, MicroBatches = microBatches, Schedule = schedule, ThreadsPerRank = 1, MemoryPerDevice = [4L << 30] },
            Gpt.Loss, ps => optim.AdamW(ps, 1e-3));
        Agree(pipe, x, y);
    }

    [Fact]
    public void The_measured_peak_of_an_mlp_with_adamw_agrees_with_the_prediction_within_15_percent()
    {
        if (!OperatingSystem.IsLinux()) return;
        manual_seed(3);
        using var model = Mlp.Create(1024, 1024, 10, 4);
        var g = new Generator(5);
        using var x = randn([64, 1024], generator: g);
        using var y = randint(0, 10, [64], generator: g);
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 4, ThreadsPerRank = 1 },
            EquivalenceTests.CrossEntropy, ps => optim.AdamW(ps, 1e-3));
        pipe.PredictMemory(x); // without a budget, a prediction is made on request
        Agree(pipe, x, y);
    }

    private void Agree(Pipeline pipe, Tensor x, Tensor y)
    {
        for (int step = 0; step < 3; step++) pipe.TrainStep(x, y);
        var stats = pipe.LastStep!;
        var prediction = pipe.PredictedMemory!;
        output.WriteLine(prediction.ToString());
        output.WriteLine($"measured {MemorySize.Format(stats.PeakMemoryBytes!.Value)}, predicted {MemorySize.Format(stats.PredictedMemoryBytes!.Value)}");
        Assert.Equal(prediction.SharedProcessBytes, stats.PredictedMemoryBytes);
        double ratio = (double)stats.PeakMemoryBytes.Value / stats.PredictedMemoryBytes.Value;
        Assert.True(ratio is > 0.85 and < 1.15,
            $"measured {stats.PeakMemoryBytes:N0} bytes, predicted {stats.PredictedMemoryBytes:N0} (ratio {ratio:0.000}):\n{prediction}");
    }
}

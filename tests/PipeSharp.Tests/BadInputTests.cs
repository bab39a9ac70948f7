using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>Bad configuration is refused before any work starts, with a message that names the parameter and the fix.</summary>
public class BadInputTests
{
    private static Pipeline Make(PipelineOptions options, int layers = 4) =>
        new(TestModels.Layers(layers), options, TestModels.Mse, TestModels.Sgd);

    [Fact]
    public void Balance_that_does_not_sum_to_the_layer_count()
    {
        var e = Assert.Throws<ArgumentException>(() => Make(new PipelineOptions { Balance = [2, 1] }));
        Assert.Equal("balance", e.ParamName);
        Assert.Contains("sums to 3, but the model has 4 layers", e.Message);
        Assert.Contains("add up to 4", e.Message);
    }

    [Fact]
    public void Balance_with_an_empty_stage()
    {
        var e = Assert.Throws<ArgumentException>(() => Make(new PipelineOptions { Balance = [4, 0] }));
        Assert.Equal("balance", e.ParamName);
        Assert.Contains("balance[1] is 0", e.Message);
    }

    [Fact]
    public void Balance_and_stages_disagree()
    {
        var e = Assert.Throws<ArgumentException>(() => Make(new PipelineOptions { Ranks = 3, Balance = [2, 2] }));
        Assert.Equal("ranks", e.ParamName);
    }

    [Fact]
    public void More_stages_than_layers()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Make(new PipelineOptions { Ranks = 5 }));
        Assert.Equal("ranks", e.ParamName);
        Assert.Contains("use at most 4 ranks", e.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-2)]
    public void Zero_or_negative_stages(int stages)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Make(new PipelineOptions { Ranks = stages }));
        Assert.Equal("ranks", e.ParamName);
        Assert.Contains("at least 1", e.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    public void Zero_or_negative_micro_batches(int microBatches)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Make(new PipelineOptions { MicroBatches = microBatches }));
        Assert.Contains("MicroBatches must be at least 1", e.Message);
    }

    [Fact]
    public void Zero_threads_per_stage()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Make(new PipelineOptions { ThreadsPerRank = 0 }));
        Assert.Contains("ThreadsPerRank", e.Message);
    }

    [Fact]
    public void More_micro_batches_than_samples_is_refused_before_any_work()
    {
        var layers = TestModels.Layers(4);
        using var pipe = new Pipeline(layers, new PipelineOptions { Ranks = 2, MicroBatches = 8 }, TestModels.Mse, TestModels.Sgd);
        var before = layers[0].parameters().First().detach().clone();
        var e = Assert.Throws<ArgumentException>(() => pipe.TrainStep(randn(5, 16), randn(5, 16)));
        Assert.Equal("input", e.ParamName);
        Assert.Contains("has 5 samples", e.Message);
        Assert.Contains("at most 5", e.Message);
        Assert.Null(pipe.LastStep);
        Assert.Equal(0, (layers[0].parameters().First().detach() - before).abs().max().item<float>());
    }

    [Fact]
    public void Targets_with_a_different_batch_size()
    {
        using var pipe = Make(new PipelineOptions { Ranks = 2, MicroBatches = 2 });
        var e = Assert.Throws<ArgumentException>(() => pipe.TrainStep(randn(8, 16), randn(6, 16)));
        Assert.Equal("target", e.ParamName);
    }

    [Theory]
    [InlineData("cuda:7")]
    [InlineData("cuda")]
    [InlineData("tpu")]
    [InlineData("cuda:x")]
    public void Device_that_does_not_exist(string device)
    {
        if (device.StartsWith("cuda") && cuda.is_available() && device != "cuda:7" && device != "cuda:x") return; // exists here
        var e = Assert.Throws<ArgumentException>(() => Make(new PipelineOptions { Ranks = 2, Devices = ["cpu", device] }));
        Assert.Equal("devices", e.ParamName);
        Assert.Contains(device, e.Message);
    }

    [Fact]
    public void Wrong_number_of_devices()
    {
        var e = Assert.Throws<ArgumentException>(() => Make(new PipelineOptions { Ranks = 4, Devices = ["cpu", "cpu"] }));
        Assert.Equal("devices", e.ParamName);
        Assert.Contains("one device for all ranks or one per rank", e.Message);
    }

    [Fact]
    public void Unknown_schedule()
    {
        var e = Assert.Throws<ArgumentException>(() => Make(new PipelineOptions { Ranks = 2, Schedule = "pipedream" }));
        Assert.Contains("gpipe, 1f1b", e.Message);
    }

    [Theory]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    [InlineData(double.NegativeInfinity)]
    [InlineData(0.0)]
    [InlineData(-1.0)]
    public void Max_grad_norm_that_is_not_a_positive_finite_number(double maxGradNorm)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Make(new PipelineOptions { Ranks = 2, MaxGradNorm = maxGradNorm }));
        Assert.Equal("maxGradNorm", e.ParamName);
        Assert.Contains("MaxGradNorm must be a positive finite number", e.Message);
        Assert.Contains("null for no clipping", e.Message);
    }

    [Fact]
    public void Export_to_an_unwritable_path_names_that_path_not_a_temporary_file()
    {
        const string path = "/proc/pipesharp-test-export.safetensors"; // /proc takes no new files, not even from root
        var state = new Dictionary<string, Tensor> { ["w"] = ones(2) };
        var e = Assert.ThrowsAny<IOException>(() => Checkpoints.ModelExport.Save(state, path, new { layers = 1 }));
        Assert.Contains(path, e.Message);
        Assert.DoesNotContain(".tmp-", e.Message);
    }
}

using PipeSharp.Memory;
using PipeSharp.Models;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Memory;

/// <summary>
/// Budgets as text, and plans refused before they train with the rank, the bytes and what would fit. The activations
/// are measured on the process-wide native heap, so these run alone.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class BudgetRefusalTests
{
    [Theory]
    [InlineData("2GB", 2_000_000_000L)]
    [InlineData("1.5GiB", 1_610_612_736L)]
    [InlineData("512 mb", 512_000_000L)]
    [InlineData("64KiB", 65_536L)]
    [InlineData("4096", 4096L)]
    public void Sizes_are_read_in_decimal_and_binary_units(string text, long bytes) =>
        Assert.Equal(bytes, MemorySize.Parse(text, "--memory-per-device"));

    [Theory]
    [InlineData("2 gigs")]
    [InlineData("-1GB")]
    [InlineData("GB")]
    [InlineData("2GB,,1GB")]
    public void A_bad_size_names_the_option_and_a_valid_example(string text)
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => MemorySize.ParseList(text, "--memory-per-device"));
        Assert.Contains("--memory-per-device", e.Message);
        Assert.Contains("2GB", e.Message);
    }

    [Fact]
    public void A_list_gives_one_budget_per_rank() =>
        Assert.Equal([2_000_000_000L, 1_500_000_000L], MemorySize.ParseList("2GB,1.5GB"));

    [Fact]
    public void Parameters_gradients_and_adamw_state_over_the_budget_are_refused_before_the_stages_are_built()
    {
        manual_seed(1);
        using var model = Mlp.Create(1024, 1024, 10, 4); // about 3.2M parameters: 12.6 MB, x 4 with gradients and AdamW state
        var e = Assert.Throws<MemoryBudgetExceededException>(() => new Pipeline(model,
            new PipelineOptions { Ranks = 2, MicroBatches = 4, MemoryPerDevice = [20_000_000] },
            EquivalenceTests.CrossEntropy, ps => optim.AdamW(ps, 1e-3)));
        Assert.Equal(0, e.Rank);
        Assert.Equal(20_000_000, e.AllowedBytes);
        Assert.True(e.PredictedBytes > e.AllowedBytes);
        Assert.Equal("memoryPerDevice", e.ParamName);
        Assert.Contains("rank 0", e.Message);
        Assert.Contains("AdamW: 2 x parameters", e.Message);
        Assert.Contains(e.WouldFit, w => w.StartsWith("Ranks = ")); // more stages spread the parameters
        Assert.Contains(e.WouldFit[0], e.Message);
    }

    [Fact]
    public void A_spec_model_over_the_budget_is_refused_before_any_stage_is_built_and_counts_one_layer_at_a_time()
    {
        var spec = Mlp.Spec(1024, 1024, 10, 4, seed: 1); // the same 12.6 MB of parameters as above, as layer specifications
        var calls = new int[spec.Layers.Count];
        var counted = new Construction.ModelSpec(spec.Layers.Select((l, i) => l with { Build = d => { calls[i]++; return l.Build(d); } }), spec.Seed, spec.Ties);
        var e = Assert.Throws<MemoryBudgetExceededException>(() => new Pipeline(counted,
            new PipelineOptions { Ranks = 2, MicroBatches = 4, MemoryPerDevice = [20_000_000] },
            EquivalenceTests.CrossEntropy, ps => optim.AdamW(ps, 1e-3)));
        Assert.Equal(0, e.Rank);
        Assert.True(e.PredictedBytes > e.AllowedBytes);
        Assert.Contains(e.WouldFit, w => w.StartsWith("Ranks = "));
        // Each layer was built once, alone, to count its parameters, and freed; no stage was built after the refusal.
        Assert.All(calls, c => Assert.Equal(1, c));

        // With a budget that fits, the same count is made once more and the stages are built: twice per layer in all.
        Array.Clear(calls);
        using var pipe = new Pipeline(counted, new PipelineOptions { Ranks = 2, MicroBatches = 4, MemoryPerDevice = [1_000_000_000] },
            EquivalenceTests.CrossEntropy, ps => optim.AdamW(ps, 1e-3));
        Assert.All(calls, c => Assert.Equal(2, c));
    }

    [Fact]
    public void Activations_over_the_budget_are_refused_at_the_first_step_before_it_trains_naming_what_would_fit()
    {
        if (!OperatingSystem.IsLinux()) return; // activations are measured on glibc's heap
        var (made, input, target) = MemoryTestGpt.Create(32);
        using var model = made;
        using var x = input;
        using var y = target;
        var before = model.parameters().Select(p => p.detach().clone()).ToList();
        using var pipe = new Pipeline(model,
            new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = "gpipe", ThreadsPerRank = 1, MemoryPerDevice = [40_000_000] },
            Gpt.Loss, ps => optim.AdamW(ps, 1e-3));
        var e = Assert.Throws<MemoryBudgetExceededException>(() => pipe.TrainStep(x, y));
        Assert.Contains("measured before training", e.Message);
        Assert.True(e.Prediction.Ranks[e.Rank].ActivationBytes > e.Prediction.Ranks[e.Rank].ParameterBytes);
        Assert.NotEmpty(e.WouldFit);
        Assert.Contains(e.WouldFit, w => w.StartsWith("Schedule = 1f1b") || w.StartsWith("MicroBatches = ") || w.StartsWith("full activation recomputation"));
        // Nothing trained.
        Assert.Null(pipe.LastStep);
        Assert.All(model.parameters().Zip(before), pair => Assert.True(pair.First.detach().allclose(pair.Second, 0, 0)));
        foreach (var t in before) t.Dispose();
    }

    [Fact]
    public void A_budget_list_of_the_wrong_length_is_refused_naming_the_option()
    {
        using var model = Mlp.Create(32, 64, 8, 4);
        var e = Assert.ThrowsAny<ArgumentException>(() => new Pipeline(model,
            new PipelineOptions { Ranks = 2, MemoryPerDevice = [1L << 30, 1L << 30, 1L << 30] },
            EquivalenceTests.CrossEntropy, ps => optim.SGD(ps, 0.1)));
        Assert.Equal("memoryPerDevice", e.ParamName);
        Assert.Contains("2GB,2GB", e.Message);
    }
}

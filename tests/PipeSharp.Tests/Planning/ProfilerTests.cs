using PipeSharp.Planning;

namespace PipeSharp.Tests.Planning;

/// <summary>The profiler measures every layer through the runtime; the cache reads a profile back without measuring.</summary>
[Collection(ProcessWideCollection.Name)] // activation bytes are read from the process's native heap
public class ProfilerTests
{
    [Fact]
    public void A_profile_has_every_layer_s_times_and_bytes()
    {
        var (input, target) = PlanningModels.Sample(16);
        using var _ = input;
        using var __ = target;
        var profile = ModelProfiler.Profile(PlanningModels.Mlp(4), input, target, PlanningModels.Loss, PlanningModels.Adam, threads: 1);
        Assert.Equal(4, profile.Layers.Count);
        Assert.Equal(16, profile.MicroBatchSamples);
        Assert.Equal(16L * PlanningModels.Features * 4, profile.InputBytes);
        Assert.True(profile.OptimizerSeconds > 0);
        for (int l = 0; l < 4; l++)
        {
            var c = profile.Layers[l];
            Assert.True(c.Forward > 0 && c.Backward > 0 && c.InputGrad > 0 && c.WeightGrad > 0, $"layer {l}: {c}");
            int fanIn = l == 0 ? PlanningModels.Features : PlanningModels.Width, fanOut = l == 3 ? PlanningModels.Classes : PlanningModels.Width;
            Assert.Equal(4L * (fanIn * fanOut + fanOut), c.ParameterBytes);
            Assert.Equal(2 * c.ParameterBytes, c.OptimizerBytes); // Adam: two tensors per parameter
            Assert.Equal(16L * fanOut * 4, c.OutputBytes);
        }
        // A hidden layer keeps at least its input (16 x 128 floats) for its backward.
        Assert.True(profile.Layers[1].ActivationBytes >= 16L * PlanningModels.Width * 4, $"kept {profile.Layers[1].ActivationBytes}");
    }

    [Fact]
    public void A_second_profile_of_the_same_thing_is_read_from_the_cache_and_runs_no_layer()
    {
        using var folder = new TempFolder();
        using var counted = new CountedModel();
        var (count, model, input, target) = (counted.Count, counted.Model, counted.Input, counted.Target);
        var cache = new ProfileCache(folder.Path);
        var first = ModelProfiler.Profile(model, input, target, PlanningModels.Loss, PlanningModels.Adam, cache: cache);
        int afterFirst = count.Value;
        Assert.True(afterFirst > 0);
        Assert.True(File.Exists(cache.PathOf(first.Key)));

        var second = ModelProfiler.Profile(model, input, target, PlanningModels.Loss, PlanningModels.Adam, cache: new ProfileCache(folder.Path));
        Assert.Equal(afterFirst, count.Value);
        Assert.Equal(first.Layers, second.Layers);
        Assert.Equal(first.OptimizerSeconds, second.OptimizerSeconds);

        // Another thread count is another key: measured again.
        var third = ModelProfiler.Profile(model, input, target, PlanningModels.Loss, PlanningModels.Adam, threads: 2, cache: cache);
        Assert.NotEqual(first.Key, third.Key);
        Assert.True(count.Value > afterFirst);
    }

    [Fact]
    public void A_corrupt_cache_file_is_an_error_naming_the_file_and_the_fix_before_any_layer_runs()
    {
        using var folder = new TempFolder();
        using var counted = new CountedModel();
        var (count, model, input, target) = (counted.Count, counted.Model, counted.Input, counted.Target);
        var cache = new ProfileCache(folder.Path);
        string key = ModelProfiler.KeyOf(model, input, threads: 1);
        Directory.CreateDirectory(folder.Path);
        File.WriteAllText(cache.PathOf(key), "{ \"Key\": \"" + key + "\", \"Layers\": [ {");
        var e = Assert.Throws<InvalidDataException>(() =>
            ModelProfiler.Profile(model, input, target, PlanningModels.Loss, PlanningModels.Adam, cache: cache));
        Assert.Contains(cache.PathOf(key), e.Message);
        Assert.Contains("delete it", e.Message);
        Assert.Contains("--reprofile", e.Message);
        Assert.Equal(0, count.Value);

        // Re-profiling overwrites it.
        var again = ModelProfiler.Profile(model, input, target, PlanningModels.Loss, PlanningModels.Adam, cache: new ProfileCache(folder.Path) { Reprofile = true });
        Assert.True(count.Value > 0);
        Assert.Equal(again.Layers, cache.TryRead(key)!.Layers);
    }

    [Fact]
    public void Profiling_a_model_s_layers_leaves_their_values_as_they_were()
    {
        TorchSharp.torch.manual_seed(5);
        using var model = PipeSharp.Models.Mlp.Create(PlanningModels.Features, 64, PlanningModels.Classes, 3);
        var layers = PipeSharp.Partitioning.ModelSplitter.Layers(model);
        var before = model.parameters().Select(p => p.detach().clone()).ToList();
        var (input, target) = PlanningModels.Sample(8);
        using var _ = input;
        using var __ = target;
        var profile = ModelProfiler.Profile(layers, input, target, PlanningModels.Loss, ps => TorchSharp.torch.optim.SGD(ps, 0.5));
        Assert.Equal(3, profile.Layers.Count);
        Assert.All(model.parameters().Zip(before), p => Assert.True(p.First.detach().allclose(p.Second, rtol: 0, atol: 0), "a parameter changed"));
    }

    [Fact]
    public void The_in_process_link_costs_a_small_positive_latency()
    {
        var link = LinkProfiler.InProcess();
        Assert.True(link.LatencySeconds > 0 && link.LatencySeconds < 0.05, link.ToString());
        Assert.True(link.SecondsPerByte >= 0);
        Assert.Equal(0, link.Seconds(0));
    }

    // A model that counts its layers' forwards, and a sample micro-batch of 8 for it.
    private sealed class CountedModel : IDisposable
    {
        public StrongBox<int> Count { get; } = new(0);
        public PipeSharp.Construction.ModelSpec Model { get; }
        public TorchSharp.torch.Tensor Input { get; }
        public TorchSharp.torch.Tensor Target { get; }

        public CountedModel()
        {
            Model = PlanningModels.Counting(Count);
            (Input, Target) = PlanningModels.Sample(8);
        }

        public void Dispose()
        {
            Input.Dispose();
            Target.Dispose();
        }
    }
}

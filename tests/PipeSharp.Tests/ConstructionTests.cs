using System.Security.Cryptography;
using PipeSharp.Checkpoints;
using PipeSharp.Construction;
using PipeSharp.Models;
using PipeSharp.Native;
using PipeSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>
/// Models built per stage from a <see cref="ModelSpec"/>: each layer once, under its own seed, so the initial model is
/// bitwise the same for every layout, and training it equals single-device training of the same spec built whole.
/// </summary>
[Collection(GlobalRandomCollection.Name)]
public class ConstructionTests
{
    internal static readonly GptConfig Tiny = new(VocabularySize: 13, ContextLength: 8, Layers: 4, Width: 16, Heads: 2);

    /// <summary>SHA-256 of each tensor's bytes (on the CPU), by name.</summary>
    internal static Dictionary<string, string> Hashes(IEnumerable<KeyValuePair<string, Tensor>> state) =>
        state.ToDictionary(kv => kv.Key, kv =>
        {
            using var cpu = kv.Value.detach().cpu().contiguous();
            return Convert.ToHexStringLower(SHA256.HashData(cpu.bytes));
        });

    internal static List<(Tensor, Tensor)> TokenBatches(int count, int batch = 8, int seed = 3)
    {
        var gen = new Generator((ulong)seed);
        return Enumerable.Range(0, count).Select(_ =>
        {
            var tokens = randint(0, Tiny.VocabularySize, [batch, Tiny.ContextLength + 1], generator: gen);
            return (tokens[.., ..Tiny.ContextLength], tokens[.., 1..]);
        }).ToList();
    }

    public static TheoryData<string, int, int?, int> Layouts => new()
    {
        { "gpipe", 1, null, 1 }, { "1f1b", 2, null, 1 }, { "gpipe", 4, null, 1 }, { "1f1b", 4, null, 1 },
        { "interleaved", 2, 2, 1 }, { "zb-h1", 3, null, 1 }, { "zb-v", 2, 2, 1 }, { "1f1b", 2, null, 2 },
    };

    [Theory]
    [MemberData(nameof(Layouts))]
    public void The_initial_parameters_are_bitwise_those_of_the_spec_built_whole_for_every_layout(string schedule, int ranks, int? perRank, int replicas)
    {
        var spec = Gpt.Spec(Tiny, seed: 5);
        using var whole = spec.Build();
        var expected = WholeHashes(spec, whole);
        using var pipe = new Pipeline(spec,
            new PipelineOptions { Ranks = ranks, StagesPerRank = perRank, Schedule = schedule, MicroBatches = 4, Replicas = replicas, ThreadsPerRank = 1 },
            Gpt.Loss, ps => optim.AdamW(ps, 1e-3));
        var state = pipe.StateDict();
        Assert.Equal(expected.Keys.Order(), state.Keys.Order());
        var actual = Hashes(state);
        foreach (var t in state.Values) t.Dispose();
        foreach (var (name, hash) in expected) Assert.True(hash == actual[name], $"{name} differs under {schedule}, {ranks} ranks, {replicas} replicas");
        Assert.Equal(0, pipe.SharedParameterDrift());
        // Every replica's copy equals replica 0's.
        foreach (var r in pipe.Replicas.Skip(1))
            foreach (var s in r.Local)
                Assert.Equal(Hashes(pipe.Replicas[0].Stages[s.Module.Index]!.Module.state_dict()), Hashes(s.Module.state_dict()));
    }

    [Fact]
    public void Layer_seeds_do_not_depend_on_the_global_generator_and_the_callers_state_is_kept()
    {
        var spec = Mlp.Spec(6, 8, 3, 4, seed: 9);
        manual_seed(1);
        using var a = spec.Build();
        using var drawnAfterA = rand(3);
        manual_seed(2);
        using var b = spec.Build();
        Assert.Equal(Hashes(a.state_dict()), Hashes(b.state_dict()));
        manual_seed(1);
        using var expected = rand(3);
        Assert.True(drawnAfterA.allclose(expected, 0, 0), "building a spec changed the caller's random stream");
        using var other = Mlp.Spec(6, 8, 3, 4, seed: 10).Build();
        Assert.NotEqual(Hashes(a.state_dict())["0.linear.weight"], Hashes(other.state_dict())["0.linear.weight"]);
        using var alone = spec.BuildLayer(2);
        Assert.Equal(Hashes(a.state_dict())["2.linear.weight"], Hashes(alone.state_dict())["linear.weight"]);
    }

    [Fact]
    public void Each_layer_is_built_once_and_the_head_stage_does_not_build_the_embeddings_it_is_tied_to()
    {
        var calls = new int[Tiny.Layers + 2];
        var spec = Counted(Gpt.Spec(Tiny, seed: 5), calls);
        using var pipe = new Pipeline(spec, new PipelineOptions { Ranks = 3, MicroBatches = 2, ThreadsPerRank = 1 }, Gpt.Loss, ps => optim.SGD(ps, 0.1));
        Assert.All(calls, c => Assert.Equal(1, c));
        Assert.Equal(0, pipe.SharedParameterDrift());
        Assert.Single(pipe.SharedParameterNames);
        // Built alone, the head takes the tie's value without building the embeddings.
        Array.Clear(calls);
        using var head = spec.BuildLayer(Tiny.Layers + 1);
        Assert.Equal(new[] { 0, 0, 0, 0, 0, 1 }, calls);
        using var whole = spec.Build();
        Assert.Equal(WholeHashes(spec, whole)["head.lm_head.weight"], Hashes(head.state_dict())["lm_head.weight"]);
        // Built whole, the tie is one parameter object, as in Gpt.Create.
        Assert.Equal(ParameterIdentity.Distinct(whole.parameters()).Count, whole.parameters().Count() - 1);
    }

    [Fact]
    public void A_tie_without_an_initializer_builds_the_owner_alone_for_the_user_and_copies_its_value()
    {
        var calls = new int[Tiny.Layers + 2];
        var gpt = Gpt.Spec(Tiny, seed: 5);
        var spec = Counted(new ModelSpec(gpt.Layers, gpt.Seed, gpt.Ties.Select(t => t with { Initialize = null })), calls);
        using var head = spec.BuildLayer(Tiny.Layers + 1);
        Assert.Equal(new[] { 1, 0, 0, 0, 0, 1 }, calls);
        using var embed = spec.BuildLayer(0);
        Assert.Equal(Hashes(embed.state_dict())["wte.weight"], Hashes(head.state_dict())["lm_head.weight"]);
    }

    [Theory]
    [InlineData("1f1b", 2)]
    [InlineData("interleaved", 2)]
    [InlineData("gpipe", 4)]
    public void Training_a_spec_model_in_stages_equals_single_device_training_of_the_spec_built_whole(string schedule, int ranks)
    {
        var spec = Gpt.Spec(Tiny, seed: 5);
        var batches = TokenBatches(8);
        using var whole = spec.Build();
        using var opt = optim.AdamW(ParameterIdentity.Distinct(whole.parameters()), 1e-3);
        using var pipe = new Pipeline(spec,
            new PipelineOptions { Ranks = ranks, StagesPerRank = schedule == "interleaved" ? 2 : null, Schedule = schedule, MicroBatches = 4, ThreadsPerRank = 1 },
            Gpt.Loss, ps => optim.AdamW(ps, 1e-3));
        foreach (var (x, y) in batches)
        {
            opt.zero_grad();
            using (var loss = Gpt.Loss(whole.call(x), y)) loss.backward();
            opt.step();
            pipe.TrainStep(x, y);
        }
        var state = pipe.StateDict();
        double max = 0;
        var wholeState = whole.state_dict();
        foreach (var (name, t) in state)
            max = Math.Max(max, (t - wholeState[name == "head.lm_head.weight" ? "embed.wte.weight" : name]).abs().max().item<float>());
        foreach (var t in state.Values) t.Dispose();
        Assert.Equal(0, pipe.SharedParameterDrift());
        Assert.True(max <= 1e-5, $"max parameter difference {max:E2}");
    }

    [Fact]
    public void Automatic_balancing_of_a_spec_equals_that_of_the_model_built_whole()
    {
        var spec = Gpt.Spec(Tiny with { Layers = 6 }, seed: 5);
        using var whole = spec.Build();
        using var a = new Pipeline(spec, new PipelineOptions { Ranks = 3, MicroBatches = 2 }, Gpt.Loss, ps => optim.SGD(ps, 0.1));
        using var b = new Pipeline(whole, new PipelineOptions { Ranks = 3, MicroBatches = 2 }, Gpt.Loss, ps => optim.SGD(ps, 0.1));
        Assert.Equal(b.Balance, a.Balance);
        Assert.True(b.Stages.Select(s => s.ParameterCount).SequenceEqual(a.Stages.Select(s => s.ParameterCount)),
            $"{string.Join(",", b.Stages.Select(s => s.ParameterCount))} vs {string.Join(",", a.Stages.Select(s => s.ParameterCount))}; balance {string.Join(",", a.Balance)}");
    }

    [Fact]
    public void A_bad_spec_is_refused_with_the_fix()
    {
        var layer = new LayerSpec("a", _ => nn.Linear(2, 2));
        Assert.Contains("own name", Assert.Throws<ArgumentException>(() => new ModelSpec([layer, layer], 1)).Message);
        Assert.Contains("without '.'", Assert.Throws<ArgumentException>(() => new ModelSpec([layer with { Name = "a.b" }], 1)).Message);
        Assert.Contains("owner layer must come before", Assert.Throws<ArgumentException>(() =>
            new ModelSpec([layer, layer with { Name = "b" }], 1, [new TiedParameter(1, "weight", 0, "weight")])).Message);
        var wrongPath = new ModelSpec([layer, layer with { Name = "b" }], 1, [new TiedParameter(0, "weight", 1, "kernel")]);
        Assert.Contains("has no parameter 'kernel'", Assert.Throws<ArgumentException>(() => wrongPath.Build()).Message);
    }

    // The hashes of a model built whole, a tied parameter under each of its names (as a pipeline's state has it).
    internal static Dictionary<string, string> WholeHashes(ModelSpec spec, TorchSharp.Modules.Sequential whole)
    {
        var hashes = Hashes(whole.state_dict());
        foreach (var tie in spec.Ties)
            hashes.TryAdd($"{spec.Layers[tie.UserLayer].Name}.{tie.UserPath}", hashes[$"{spec.Layers[tie.OwnerLayer].Name}.{tie.OwnerPath}"]);
        return hashes;
    }

    // The spec with each layer's factory calls counted.
    internal static ModelSpec Counted(ModelSpec spec, int[] calls) =>
        new(spec.Layers.Select((l, i) => l with { Build = d => { Interlocked.Increment(ref calls[i]); return l.Build(d); } }), spec.Seed, spec.Ties);
}

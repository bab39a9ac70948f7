using PipeSharp.Checkpoints;
using PipeSharp.Models;
using PipeSharp.Randomness;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using PipeSharp.Verification;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Randomness;

/// <summary>
/// Keyed dropout: the masks depend on (seed, step, layer, dropout, sample) only, so training with dropout gives the
/// numbers of single-device training for every layout, bitwise the same numbers run to run and across a resume.
/// </summary>
// Builds models with TorchSharp's global generator (their weights are then overwritten from a fixed one): run alone,
// so that tests seeding the global generator beside them are not disturbed.
[Collection(GlobalRandomCollection.Name)]
public class KeyedDropoutTests
{
    private static readonly GptConfig Config = new(VocabularySize: 11, ContextLength: 8, Layers: 6, Width: 16, Heads: 2, Dropout: 0.1);

    private static List<(Tensor, Tensor)> Batches(int steps = 10)
    {
        var gen = new Generator(5);
        return Enumerable.Range(0, steps).Select(_ =>
        {
            var tokens = randint(0, 11, [8, 9], generator: gen);
            return (tokens[.., ..8], tokens[.., 1..]);
        }).ToList();
    }

    private static TorchSharp.Modules.Sequential Model()
    {
        var gen = new Generator(11);
        var model = Gpt.Create(Config);
        using var noGrad = no_grad();
        foreach (var p in model.parameters()) p.copy_(randn(p.shape, generator: gen) * 0.05);
        return model;
    }

    public static TheoryData<string, int, int> Layouts()
    {
        var data = new TheoryData<string, int, int>();
        foreach (var schedule in ScheduleGenerators.Names)
            foreach (var (ranks, m) in new[] { (1, 2), (2, 4), (4, 4), (2, 3) })
                if (schedule != "interleaved" || m % ranks == 0)
                    data.Add(schedule, ranks, m);
        return data;
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Training_with_dropout_equals_single_device_training_for_every_layout(string schedule, int ranks, int microBatches)
    {
        double diff = EquivalenceCheck.MaxParameterDifference(Model,
            new PipelineOptions { Ranks = ranks, MicroBatches = microBatches, Schedule = schedule, ThreadsPerRank = 1, DropoutSeed = 3 },
            ps => optim.AdamW(ps, 1e-2), Gpt.Loss, Batches());
        Assert.True(diff <= 1e-5, $"max parameter difference after 10 steps with dropout 0.1: {diff:E2} > 1e-5");
    }

    [Fact]
    public void The_masks_change_the_result_so_the_comparison_can_fail()
    {
        // The reference keys its masks with seed 0, the pipeline with seed 3: other masks, other parameters.
        var batches = Batches(3);
        double same = EquivalenceCheck.MaxParameterDifference(Model, new PipelineOptions { Ranks = 2, MicroBatches = 2, DropoutSeed = 0 },
            ps => optim.AdamW(ps, 1e-2), Gpt.Loss, batches);
        using var reference = Model();
        using var pipe = new Pipeline(Model(), new PipelineOptions { Ranks = 2, MicroBatches = 2, DropoutSeed = 3 }, Gpt.Loss, ps => optim.AdamW(ps, 1e-2));
        KeyedDropout.NumberLayers(reference.children());
        using (var opt = optim.AdamW(Native.ParameterIdentity.Distinct(reference.parameters()), 1e-2))
            for (int k = 0; k < batches.Count; k++)
            {
                opt.zero_grad();
                using (DropoutContext.Enter(seed: 0, step: k, firstSample: 0)) Gpt.Loss(reference.call(batches[k].Item1), batches[k].Item2).backward();
                opt.step();
                pipe.TrainStep(batches[k].Item1, batches[k].Item2);
            }
        double other = MaxDifference(reference, pipe);
        Assert.True(same <= 1e-5, $"same seed: {same:E2}");
        Assert.True(other > 1e-3, $"other seed: {other:E2}, expected other masks");
    }

    [Fact]
    public void Two_runs_of_one_layout_are_bitwise_equal()
    {
        var a = Train(new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = "1f1b", DropoutSeed = 1 }, Batches());
        var b = Train(new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = "1f1b", DropoutSeed = 1 }, Batches());
        Assert.Equal(0, MaxDifference(a, b));
    }

    [Fact]
    public void A_resumed_run_is_bitwise_equal_to_an_uninterrupted_one()
    {
        var options = new PipelineOptions { Ranks = 2, MicroBatches = 2, Schedule = "zb-h1", DropoutSeed = 1 };
        var batches = Batches(6);
        var straight = Train(options, batches);

        IReadOnlyDictionary<string, Tensor> state;
        IReadOnlyDictionary<string, byte[]> optimizer;
        using (var first = new Pipeline(Model(), options, Gpt.Loss, ps => optim.AdamW(ps, 1e-2)))
        {
            foreach (var (x, y) in batches.Take(3)) first.TrainStep(x, y);
            state = first.StateDict();
            optimizer = first.OptimizerState();
        }
        // Resumed on another layout (4 ranks, gpipe): the masks follow the step, not the layout.
        using var resumed = new Pipeline(Model(), options with { Ranks = 4, Schedule = "gpipe", MicroBatches = 4 }, Gpt.Loss, ps => optim.AdamW(ps, 1e-2));
        resumed.LoadStateDict(state);
        resumed.LoadOptimizerState(optimizer);
        resumed.TrainingSteps = 3;
        foreach (var (x, y) in batches.Skip(3)) resumed.TrainStep(x, y);
        Assert.True(MaxDifference(straight, resumed.StateDict()) <= 1e-5);

        using var sameLayout = new Pipeline(Model(), options, Gpt.Loss, ps => optim.AdamW(ps, 1e-2));
        sameLayout.LoadStateDict(state);
        sameLayout.LoadOptimizerState(optimizer);
        sameLayout.TrainingSteps = 3;
        foreach (var (x, y) in batches.Skip(3)) sameLayout.TrainStep(x, y);
        Assert.Equal(0, MaxDifference(straight, sameLayout.StateDict()));
    }

    [Fact]
    public void A_sample_gets_the_same_mask_in_any_micro_batch_and_on_a_second_run()
    {
        var dropout = new KeyedDropout(0.3);
        KeyedDropout.NumberLayers([dropout], firstLayer: 5);
        using var x = ones(8, 4, 6);
        using var whole = Run(dropout, x, step: 2, firstSample: 0);
        using var again = Run(dropout, x, step: 2, firstSample: 0);
        using var front = Run(dropout, x[..3], step: 2, firstSample: 0);
        using var back = Run(dropout, x[3..], step: 2, firstSample: 3);
        Assert.True(Same(whole, again), "the same forward twice (a recomputation) must draw the same mask");
        Assert.True(Same(whole, cat([front, back], 0)), "a sample's mask must not depend on its micro-batch");

        using var nextStep = Run(dropout, x, step: 3, firstSample: 0);
        Assert.False(Same(whole, nextStep), "another step draws other masks");
        using var shifted = Run(dropout, x, step: 2, firstSample: 1);
        Assert.False(Same(whole, shifted), "another sample draws another mask");

        double dropped = whole.eq(0).to(ScalarType.Float64).mean().item<double>();
        Assert.InRange(dropped, 0.2, 0.4);
        Assert.True(whole.ne(0).sum().item<long>() == 0 || Math.Abs(whole.max().item<float>() - 1 / 0.7f) < 1e-6, "kept elements are scaled by 1/(1-p)");

        dropout.eval();
        using var eval = Run(dropout, x, step: 2, firstSample: 0);
        Assert.True(Same(eval, x), "evaluation mode is the identity");
    }

    [Fact]
    public void Two_dropouts_of_one_layer_and_the_same_dropout_in_two_layers_draw_different_masks()
    {
        var a = new KeyedDropout(0.5);
        var b = new KeyedDropout(0.5);
        var c = new KeyedDropout(0.5);
        KeyedDropout.NumberLayers([nn.Sequential(a, b), c]);
        Assert.Equal((0, 0), (a.Layer, a.Index));
        Assert.Equal((0, 1), (b.Layer, b.Index));
        Assert.Equal((1, 0), (c.Layer, c.Index));
        using var x = ones(4, 32);
        using var ma = Run(a, x, 0, 0);
        using var mb = Run(b, x, 0, 0);
        using var mc = Run(c, x, 0, 0);
        Assert.False(Same(ma, mb));
        Assert.False(Same(ma, mc));
    }

    [Fact]
    public void A_dropout_without_a_layer_number_is_refused_with_the_fix()
    {
        var d = new KeyedDropout(0.5);
        using var x = ones(2, 3);
        var e = Assert.Throws<InvalidOperationException>(() => Run(d, x, 0, 0));
        Assert.Contains("KeyedDropout.NumberLayers", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new KeyedDropout(1.0));
    }

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    private static Tensor Run(KeyedDropout dropout, Tensor x, long step, long firstSample)
    {
        using (DropoutContext.Enter(seed: 9, step, firstSample)) return dropout.call(x);
    }

    private static IReadOnlyDictionary<string, Tensor> Train(PipelineOptions options, IReadOnlyList<(Tensor, Tensor)> batches)
    {
        using var pipe = new Pipeline(Model(), options, Gpt.Loss, ps => optim.AdamW(ps, 1e-2));
        foreach (var (x, y) in batches) pipe.TrainStep(x, y);
        return pipe.StateDict();
    }

    private static double MaxDifference(nn.Module reference, Pipeline pipe) => MaxDifference(
        reference.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter.detach()), pipe.StateDict());

    private static double MaxDifference(IReadOnlyDictionary<string, Tensor> a, IReadOnlyDictionary<string, Tensor> b)
    {
        double max = 0;
        foreach (var (name, t) in a)
            if (b.TryGetValue(name, out var u)) max = Math.Max(max, (t - u).abs().max().item<float>());
        return max;
    }
}

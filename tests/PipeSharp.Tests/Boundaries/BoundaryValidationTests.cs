using PipeSharp.Boundaries;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Boundaries;

/// <summary>Models and batches of named tensors are checked before anything runs, with errors that name the layer, the tensor and the fix.</summary>
public class BoundaryValidationTests
{
    private static TorchSharp.Modules.Sequential Model(params (string, nn.IModule<Tensor, Tensor>)[] layers) => SetModels.Sequential(layers);

    private static FunctionLayer Copy(string from, string to) =>
        new("copy", [from], [to], t => TensorSet.Of(t[from].alias(), to));

    private static Pipeline Make(TorchSharp.Modules.Sequential model, PipelineOptions options) =>
        new(model, options, TestModels.Mse, TestModels.Sgd);

    [Fact]
    public void A_tensor_that_nothing_makes_is_refused_naming_the_layer_the_tensor_and_the_fix()
    {
        var model = Model(("0", nn.Linear(16, 16)), ("join", new FunctionLayer("join", ["x", "skip"], ["x"], t => TensorSet.Of(t["x"] + t["skip"]))));
        var e = Assert.Throws<ArgumentException>(() => Make(model, new PipelineOptions { Ranks = 2 }));
        Assert.Equal("model", e.ParamName);
        Assert.Contains("layer 1 ('join') reads 'skip', which no earlier layer writes and which is not a pipeline input (inputs: x)", e.Message);
        Assert.Contains("make an earlier layer write 'skip', or add it to PipelineOptions.Inputs", e.Message);
    }

    [Fact]
    public void A_tensor_written_only_by_a_later_layer_is_refused()
    {
        var model = Model(("use", Copy("late", "x")), ("make", Copy("x", "late")), ("2", nn.Linear(16, 16)));
        var e = Assert.Throws<ArgumentException>(() => Make(model, new PipelineOptions { Ranks = 1 }));
        Assert.Contains("layer 0 ('use') reads 'late'", e.Message);
    }

    [Fact]
    public void A_last_layer_that_writes_two_tensors_is_refused()
    {
        var model = Model(("0", nn.Linear(16, 16)), ("split", new FunctionLayer("split", ["x"], ["a", "b"], t => new TensorSet { ["a"] = t["x"], ["b"] = t["x"] })));
        var e = Assert.Throws<ArgumentException>(() => Make(model, new PipelineOptions { Ranks = 2 }));
        Assert.Contains("the last layer, layer 1 ('split'), writes 2 tensors (a, b) but the loss takes one", e.Message);
    }

    [Fact]
    public void Batches_must_hold_exactly_the_declared_inputs_with_one_sample_count()
    {
        using var pipe = Make(Model(("mix", new FunctionLayer("mix", ["a", "b"], ["x"], t => TensorSet.Of(t["a"] * t["b"]))), ("1", nn.Linear(16, 16))),
            new PipelineOptions { Ranks = 2, MicroBatches = 2, Inputs = ["a", "b"] });
        using var a = randn(4, 16);
        using var b = randn(4, 16);
        using var shorter = randn(3, 16);
        using var y = randn(4, 16);

        var missing = Assert.Throws<ArgumentException>(() => pipe.TrainStep(new TensorSet { ["a"] = a }, y));
        Assert.Equal("inputs", missing.ParamName);
        Assert.Contains("inputs holds a but the pipeline's inputs are a, b (missing: b)", missing.Message);

        var extra = Assert.Throws<ArgumentException>(() => pipe.TrainStep(new TensorSet { ["a"] = a, ["b"] = b, ["c"] = b }, y));
        Assert.Contains("(not an input: c)", extra.Message);

        var uneven = Assert.Throws<ArgumentException>(() => pipe.TrainStep(new TensorSet { ["a"] = a, ["b"] = shorter }, y));
        Assert.Contains("inputs['b'] has 3 samples but inputs['a'] has 4", uneven.Message);

        var one = Assert.Throws<ArgumentException>(() => pipe.TrainStep(a, y));
        Assert.Equal("input", one.ParamName);
        Assert.Contains("this pipeline takes 2 inputs (a, b), not one tensor: pass a TensorSet", one.Message);

        Assert.True(float.IsFinite(pipe.TrainStep(new TensorSet { ["a"] = a, ["b"] = b }, y))); // and the right batch trains
    }

    [Fact]
    public void Inputs_with_a_repeated_or_empty_name_are_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => Make(Model(("0", nn.Linear(16, 16))), new PipelineOptions { Inputs = ["x", "x"] }));
        Assert.Equal("inputs", e.ParamName);
        Assert.Contains("names 'x' twice", e.Message);
        Assert.Throws<ArgumentException>(() => Make(Model(("0", nn.Linear(16, 16))), new PipelineOptions { Inputs = [] }));
    }

    [Fact]
    public void A_set_layer_that_returns_other_tensors_than_it_declares_fails_naming_the_layer_and_stage()
    {
        var liar = new FunctionLayer("liar", ["x"], ["x"], t => TensorSet.Of(t["x"], "y"));
        using var pipe = Make(Model(("0", nn.Linear(16, 16)), ("liar", liar), ("2", nn.Linear(16, 16))), new PipelineOptions { Balance = [1, 2] });
        using var x = randn(4, 16);
        using var y = randn(4, 16);
        var e = Assert.Throws<PipelineStageException>(() => pipe.TrainStep(x, y));
        Assert.Contains("layer 1 ('liar') of stage 1 declares that it writes x but returned TensorSet(y [4,16])", e.InnerException!.Message);
    }

    [Fact]
    public void A_set_layer_cannot_run_on_one_tensor_unless_it_reads_and_writes_one()
    {
        var model = Model(("0", nn.Linear(16, 16)), ("split", new FunctionLayer("split", ["x"], ["x", "s"], t => new TensorSet { ["x"] = t["x"], ["s"] = t["x"] })),
            ("join", new FunctionLayer("join", ["x", "s"], ["x"], t => TensorSet.Of(t["x"] + t["s"]))));
        using var x = randn(2, 16);
        var e = Assert.Throws<NotSupportedException>(() => model.forward(x));
        Assert.Contains("Run the model with a Pipeline, or with SetModels.Forward", e.Message);
        using var scope = NewDisposeScope();
        Assert.Equal([2, 16], SetModels.Forward(model, TensorSet.Of(x)).shape);
    }

    [Fact]
    public void The_validator_follows_the_links_of_a_model_with_skips()
    {
        // Stage 1 reads nothing of stage 0 (links 0->2 and 1->2): rank 0 may finish stage 0's backward before it runs stage 1.
        var schedule = ScheduleFile.Parse("""
            name: skip
            stages: 3
            microbatches: 1
            placement: 0 0 1
            rank 0: 0F0 1F0 0B0 1B0
            rank 1: 2F0 2B0
            """, "skip");
        ScheduleValidator.Validate(schedule, new HashSet<(int, int)> { (0, 2), (1, 2) });
        // Hop by hop (the default), 0B0 waits for 1B0, which comes after it on the same rank.
        var e = Assert.Throws<InvalidScheduleException>(() => ScheduleValidator.Validate(schedule));
        Assert.Contains("deadlock", e.Message);
        // A link 0->1 (stage 1 reads stage 0) brings the wait back.
        Assert.Throws<InvalidScheduleException>(() => ScheduleValidator.Validate(schedule, new HashSet<(int, int)> { (0, 1), (1, 2), (0, 2) }));
    }
}

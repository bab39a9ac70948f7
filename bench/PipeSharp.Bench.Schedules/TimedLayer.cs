using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Bench.Schedules;

/// <summary>
/// A layer whose forward, input-gradient and weight-gradient passes take known times without using a core
/// (they sleep), so eight stages can run on a two-core machine and the measured timeline can be compared with the
/// simulator's. Output = Input(x) + Weight(w): the input path sleeps F in forward and I in backward; the weight
/// path sleeps W in backward and adds zero. A full backward runs both (I + W).
/// </summary>
internal sealed class TimedLayer : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly int _forwardMs, _inputGradMs, _weightGradMs;

    public TimedLayer(int forwardMs, int inputGradMs, int weightGradMs) : base("timed")
    {
        weight = new Parameter(zeros(1));
        (_forwardMs, _inputGradMs, _weightGradMs) = (forwardMs, inputGradMs, weightGradMs);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) =>
        InputPath.Apply(x, _forwardMs, _inputGradMs) + WeightPath.Apply(weight, _weightGradMs);

    private sealed class InputPath : torch.autograd.SingleTensorFunction<InputPath>
    {
        public static Tensor Apply(Tensor x, int forwardMs, int backwardMs) => apply(x, forwardMs, backwardMs);

        public override string Name => "TimedInput";

        public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
        {
            ctx.save_data("ms", vars[2]);
            Thread.Sleep((int)vars[1]);
            return ((Tensor)vars[0]).clone();
        }

        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad)
        {
            Thread.Sleep((int)ctx.get_data("ms"));
            return [grad.clone(), null!, null!];
        }
    }

    private sealed class WeightPath : torch.autograd.SingleTensorFunction<WeightPath>
    {
        public static Tensor Apply(Tensor w, int backwardMs) => apply(w, backwardMs);

        public override string Name => "TimedWeight";

        public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
        {
            ctx.save_data("ms", vars[1]);
            return ((Tensor)vars[0]).mul(0).sum();
        }

        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad)
        {
            Thread.Sleep((int)ctx.get_data("ms"));
            return [zeros(1), null!];
        }
    }
}

/// <summary>
/// Multiplies its input by a parameter (1): placed before the first stage's timed layer, it gives that layer an
/// input that needs a gradient, so stage 0's I and B cost what every other stage's do (a real first stage also
/// computes input gradients inside itself, just not for the batch).
/// </summary>
internal sealed class ScaleLayer : nn.Module<Tensor, Tensor>
{
    private readonly Parameter scale = new(ones(1));

    public ScaleLayer() : base("scale") => RegisterComponents();

    public override Tensor forward(Tensor x) => x * scale;
}

using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Randomness;

/// <summary>
/// Dropout whose mask depends only on (seed, training step, layer, which dropout of the layer, sample index in the
/// batch), so training with dropout gives the same numbers for any number of stages, schedule, micro-batch count,
/// backend, and after a resume. In training mode each sample's mask is drawn from its own generator, keyed through the
/// <see cref="DropoutContext"/> the pipeline sets for every forward; kept elements are scaled by 1/(1-p) as
/// <c>nn.Dropout</c> does. In evaluation mode (or with p = 0) it is the identity. Running the same forward twice
/// under the same context (a recomputation) draws the same masks.
/// </summary>
/// <remarks>
/// A pipeline numbers its layers' keyed dropouts (<see cref="NumberLayers"/>, layer = index in the model, index = order
/// among the layer's keyed dropouts) when it cuts them into stages; call <see cref="NumberLayers"/> on a model used
/// without a pipeline (<c>Gpt.Create</c> does). Without a context on the thread, a training forward draws from
/// TorchSharp's generator like <c>nn.Dropout</c>.
/// </remarks>
public sealed class KeyedDropout : TorchSharp.Modules.ParameterLessModule<Tensor, Tensor>
{
    /// <summary>Creates a dropout of probability <paramref name="probability"/>, numbered later by its layer.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="probability"/> is not in [0, 1).</exception>
    public KeyedDropout(double probability) : base("keyed_dropout")
    {
        if (probability is < 0 or >= 1 || double.IsNaN(probability))
            throw new ArgumentOutOfRangeException(nameof(probability), probability, "the dropout probability must be in [0, 1).");
        Probability = probability;
    }

    /// <summary>The probability of zeroing an element.</summary>
    public double Probability { get; }

    /// <summary>The index in the model of the layer holding this dropout (-1 until numbered).</summary>
    public int Layer { get; private set; } = -1;

    /// <summary>Which keyed dropout of its layer this is (0 for the first in the layer's module order).</summary>
    public int Index { get; private set; }

    /// <summary>
    /// Numbers the keyed dropouts of <paramref name="layers"/>: those of the i-th get layer <c>firstLayer + i</c> and
    /// their order among the layer's modules as index. The numbers depend only on the model, never on how it is cut.
    /// </summary>
    /// <param name="layers">The model's layers, in order (a <c>Sequential</c>'s children, or a stage's).</param>
    /// <param name="firstLayer">The index in the model of the first of <paramref name="layers"/>.</param>
    public static void NumberLayers(IEnumerable<nn.Module> layers, int firstLayer = 0)
    {
        ArgumentNullException.ThrowIfNull(layers);
        int layer = firstLayer;
        foreach (var module in layers)
        {
            int index = 0;
            foreach (var d in new[] { module }.Concat(module.modules()).OfType<KeyedDropout>())
            {
                d.Layer = layer;
                d.Index = index++;
            }
            layer++;
        }
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor input)
    {
        if (!training || Probability == 0) return nn.functional.dropout(input, Probability, training: false); // the identity, as nn.Dropout gives it
        var keys = DropoutContext.Current;
        if (keys is null) return nn.functional.dropout(input, Probability, training: true);
        if (Layer < 0)
            throw new InvalidOperationException(
                "this KeyedDropout has no layer number: call KeyedDropout.NumberLayers on the model's layers (a Pipeline does it) before training.");
        if (input.dim() == 0) throw new ArgumentException("keyed dropout needs a batch dimension (dimension 0).", nameof(input));
        using var scope = torch.NewDisposeScope();
        var mask = Mask(keys, input.shape, input.dtype);
        var result = input.mul(input.device.type == DeviceType.CPU ? mask : mask.to(input.device));
        return result.MoveToOuterDisposeScope();
    }

    // The mask scaled by 1/(1-p): row j from the generator of sample firstSample + j, drawn on the CPU.
    private Tensor Mask(DropoutContext.Keys keys, long[] shape, ScalarType dtype)
    {
        double keep = 1 - Probability;
        var mask = torch.empty(shape, dtype: dtype is ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64 ? dtype : ScalarType.Float32);
        for (long j = 0; j < shape[0]; j++)
        {
            using var generator = new Generator(RandomKey.Of(keys.Seed, keys.Step, Layer, Index, keys.FirstSample + j));
            using var row = mask[j];
            row.bernoulli_(keep, generator: generator);
        }
        // An explicit scalar, alive until the call returns: TorchSharp's implicit double-to-Scalar conversion makes a
        // temporary the GC may finalise while the native call still reads it (seen as a failed toFloat check).
        using var scale = keep.ToScalar();
        return mask.div_(scale);
    }
}

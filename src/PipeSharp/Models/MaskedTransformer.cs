using PipeSharp.Boundaries;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Models;

/// <summary>
/// A small transformer encoder that classifies padded sequences, for models whose stages pass hidden state and an
/// attention mask: the embedding layer reads the token ids and the padding (<c>ids</c>, <c>pad</c>: true where a
/// position is padding) and writes the hidden state <c>x</c> and an additive attention mask <c>mask</c>, which every
/// block reads (the mask needs no gradient); the head pools the non-padded positions (reading <c>pad</c>, a pipeline
/// input) and writes <c>logits</c>.
/// </summary>
public static class MaskedTransformer
{
    /// <summary>The pipeline inputs' names: token ids and padding.</summary>
    public static readonly IReadOnlyList<string> Inputs = ["ids", "pad"];

    /// <summary>Layers: <c>embed</c>, <c>block0</c>..<c>block{blocks-1}</c>, <c>head</c>.</summary>
    public static TorchSharp.Modules.Sequential Create(int vocabulary, int context, int width, int heads, int blocks, int classes)
    {
        if (width % heads != 0) throw new ArgumentException($"width {width} is not a multiple of heads {heads}.", nameof(heads));
        var layers = new List<(string, nn.IModule<Tensor, Tensor>)> { ("embed", new Embed(vocabulary, context, width)) };
        for (int b = 0; b < blocks; b++) layers.Add(($"block{b}", new Block(width, heads)));
        layers.Add(("head", new Head(width, classes)));
        return SetModels.Sequential(layers);
    }

    /// <summary>
    /// A batch of random sequences: ids in 1..vocabulary-1, each sequence padded after a random length (at least half the
    /// context), and random class targets.
    /// </summary>
    public static (TensorSet Inputs, Tensor Targets) Batch(Generator generator, int batchSize, int vocabulary, int context, int classes)
    {
        var ids = torch.randint(1, vocabulary, [batchSize, context], generator: generator);
        var lengths = torch.randint(context / 2 + 1, context + 1, [batchSize, 1], generator: generator);
        var pad = torch.arange(context).unsqueeze(0).ge(lengths);
        var targets = torch.randint(0, classes, [batchSize], generator: generator);
        lengths.Dispose();
        using var zero = 0L.ToScalar();
        return (new TensorSet { ["ids"] = ids.masked_fill(pad, zero), ["pad"] = pad }, targets);
    }

    /// <summary>Token and position embeddings; the padding turned into an additive mask over the keys.</summary>
    private sealed class Embed : SetLayer
    {
        private readonly TorchSharp.Modules.Embedding tokens;
        private readonly TorchSharp.Modules.Embedding positions;

        public Embed(int vocabulary, int context, int width) : base("embed", ["ids", "pad"], ["x", "mask"])
        {
            tokens = nn.Embedding(vocabulary, width);
            positions = nn.Embedding(context, width);
            RegisterComponents();
        }

        public override TensorSet forward(TensorSet input)
        {
            var ids = input["ids"];
            var x = tokens.call(ids) + positions.call(torch.arange(ids.shape[1], device: ids.device)).unsqueeze(0);
            using var minusLarge = (-1e4).ToScalar(); // explicit scalars: see Native/CollectionPause
            var mask = input["pad"].to(ScalarType.Float32).mul(minusLarge).unsqueeze(1).unsqueeze(1); // [B, 1, 1, T]
            return new TensorSet { ["x"] = x, ["mask"] = mask };
        }
    }

    /// <summary>Pre-norm self-attention (masked) and MLP, each with a residual connection.</summary>
    private sealed class Block : SetLayer
    {
        private readonly TorchSharp.Modules.LayerNorm norm1;
        private readonly TorchSharp.Modules.Linear qkv;
        private readonly TorchSharp.Modules.Linear projection;
        private readonly TorchSharp.Modules.LayerNorm norm2;
        private readonly TorchSharp.Modules.Linear up;
        private readonly TorchSharp.Modules.Linear down;
        private readonly int _heads;

        public Block(int width, int heads) : base("block", ["x", "mask"], ["x"])
        {
            norm1 = nn.LayerNorm(width);
            // No bias: a key bias has no gradient (softmax ignores a shift shared by a query's scores), only round-off,
            // which Adam would blow up into steps that differ between any two ways of computing the same thing.
            qkv = nn.Linear(width, 3 * width, hasBias: false);
            projection = nn.Linear(width, width);
            norm2 = nn.LayerNorm(width);
            up = nn.Linear(width, 2 * width);
            down = nn.Linear(2 * width, width);
            _heads = heads;
            RegisterComponents();
        }

        public override TensorSet forward(TensorSet input)
        {
            var x = input["x"];
            long b = x.shape[0], t = x.shape[1], c = x.shape[2], d = c / _heads;
            var parts = qkv.call(norm1.call(x)).view(b, t, 3, _heads, d).permute(2, 0, 3, 1, 4); // [3, B, H, T, D]
            using var root = Math.Sqrt(d).ToScalar();
            var scores = parts[0].matmul(parts[1].transpose(-2, -1)).div(root) + input["mask"];
            var attended = scores.softmax(-1).matmul(parts[2]).transpose(1, 2).reshape(b, t, c);
            x = x + projection.call(attended);
            x = x + down.call(nn.functional.gelu(up.call(norm2.call(x))));
            return TensorSet.Of(x);
        }
    }

    /// <summary>Mean over the non-padded positions, layer norm, linear to the classes.</summary>
    private sealed class Head : SetLayer
    {
        private readonly TorchSharp.Modules.LayerNorm norm;
        private readonly TorchSharp.Modules.Linear linear;

        public Head(int width, int classes) : base("head", ["x", "pad"], ["logits"])
        {
            norm = nn.LayerNorm(width);
            linear = nn.Linear(width, classes);
            RegisterComponents();
        }

        public override TensorSet forward(TensorSet input)
        {
            var keep = input["pad"].logical_not().to(ScalarType.Float32).unsqueeze(-1); // [B, T, 1]
            var pooled = input["x"].mul(keep).sum(1).div(keep.sum(1));
            return TensorSet.Of(linear.call(norm.call(pooled)), "logits");
        }
    }
}

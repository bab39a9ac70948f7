using PipeSharp.Native;
using PipeSharp.Randomness;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Models;

/// <summary>The shape of a <see cref="Gpt"/> model.</summary>
/// <param name="VocabularySize">Number of token ids.</param>
/// <param name="ContextLength">Longest sequence the position embedding covers.</param>
/// <param name="Layers">Number of transformer blocks.</param>
/// <param name="Width">Embedding width (d_model).</param>
/// <param name="Heads">Attention heads; must divide <paramref name="Width"/>.</param>
/// <param name="Dropout">Dropout probability after embeddings, attention and MLP (0 for none); keyed (<see cref="Randomness.KeyedDropout"/>), so the same for every layout.</param>
/// <param name="TieEmbeddings">The LM head uses the token embedding table as its weight (GPT-2 does).</param>
public sealed record GptConfig(int VocabularySize, int ContextLength = 128, int Layers = 4, int Width = 128, int Heads = 4, double Dropout = 0, bool TieEmbeddings = true)
{
    /// <summary>Throws if the numbers cannot make a model.</summary>
    public void Check()
    {
        if (VocabularySize < 1) throw new ArgumentOutOfRangeException(nameof(VocabularySize), VocabularySize, "The vocabulary needs at least one token.");
        if (ContextLength < 1) throw new ArgumentOutOfRangeException(nameof(ContextLength), ContextLength, "The context length must be at least 1.");
        if (Layers < 1) throw new ArgumentOutOfRangeException(nameof(Layers), Layers, "A GPT needs at least one block.");
        if (Heads < 1 || Width % Heads != 0)
            throw new ArgumentException($"width {Width} is not divisible by {Heads} heads: choose a width that is a multiple of the head count.", nameof(Heads));
        if (Dropout is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, "Dropout must be in [0, 1).");
    }
}

/// <summary>
/// A GPT-2-style decoder-only transformer written for pipelining, in the spirit of nanoGPT: its layers are
/// [embeddings, block 0, ..., block N-1, head], so it splits block-wise into stages with the embeddings on the
/// first stage and the final norm and LM head on the last. Input: token ids [batch, time] (int64); output:
/// logits [batch, time, vocabulary].
/// </summary>
public static partial class Gpt
{
    /// <summary>
    /// Builds the model as an ordered list of layers. With tied embeddings the head's weight is the same parameter
    /// object as the token embedding; a pipeline gives the last stage its own copy and keeps the two in sync. Make the
    /// optimizer of an unsplit tied model over <c>ParameterIdentity.Distinct(model.parameters())</c>, since TorchSharp
    /// lists a shared parameter once per use.
    /// </summary>
    public static Sequential Create(GptConfig config)
    {
        config.Check();
        var embeddings = new Embeddings(config);
        var head = new Head(config);
        if (config.TieEmbeddings) head.Weight = embeddings.TokenWeight;
        var layers = new List<(string, nn.Module<Tensor, Tensor>)> { ("embed", embeddings) };
        for (int i = 0; i < config.Layers; i++) layers.Add(($"block{i}", new Block(config)));
        layers.Add(("head", head));
        KeyedDropout.NumberLayers(layers.Select(l => (nn.Module)l.Item2));
        return nn.Sequential(layers);
    }

    /// <summary>Cross-entropy of logits [batch, time, vocabulary] against next-token ids [batch, time].</summary>
    public static Tensor Loss(Tensor logits, Tensor targets) =>
        nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), targets.reshape(-1));

    /// <summary>Token plus position embeddings.</summary>
    public sealed class Embeddings : nn.Module<Tensor, Tensor>
    {
        private readonly Embedding wte, wpe;
        private readonly KeyedDropout drop;
        private readonly int _contextLength;

        /// <summary>Creates the embeddings of <paramref name="config"/>.</summary>
        public Embeddings(GptConfig config) : base("embeddings")
        {
            wte = nn.Embedding(config.VocabularySize, config.Width);
            wpe = nn.Embedding(config.ContextLength, config.Width);
            drop = new KeyedDropout(config.Dropout);
            _contextLength = config.ContextLength;
            nn.init.normal_(wte.weight, 0, 0.02);
            nn.init.normal_(wpe.weight, 0, 0.02);
            RegisterComponents();
        }

        /// <summary>The token embedding table [vocabulary, width] (tied to the LM head in GPT-2).</summary>
        public Parameter TokenWeight => wte.weight!;

        /// <inheritdoc />
        public override Tensor forward(Tensor idx)
        {
            long t = idx.shape[1];
            if (t > _contextLength)
                throw new ArgumentException($"sequence of {t} tokens is longer than the context length {_contextLength}.", nameof(idx));
            using var pos = arange(t, dtype: ScalarType.Int64, device: idx.device);
            return drop.call(wte.call(idx) + wpe.call(pos));
        }
    }

    /// <summary>Causal multi-head self-attention.</summary>
    public sealed class CausalSelfAttention : nn.Module<Tensor, Tensor>
    {
        private readonly Linear c_attn, c_proj;
        private readonly KeyedDropout attn_drop, resid_drop;
        private readonly int _heads;
        private readonly double _dropout;

        /// <summary>Creates the attention of <paramref name="config"/>.</summary>
        public CausalSelfAttention(GptConfig config) : base("attention")
        {
            c_attn = Init(nn.Linear(config.Width, 3 * config.Width));
            c_proj = nn.Linear(config.Width, config.Width);
            attn_drop = new KeyedDropout(config.Dropout);
            resid_drop = new KeyedDropout(config.Dropout);
            _heads = config.Heads;
            _dropout = config.Dropout;
            ScaleResidual(c_proj, config.Layers);
            RegisterComponents();
        }

        /// <inheritdoc />
        public override Tensor forward(Tensor x)
        {
            long b = x.shape[0], t = x.shape[1], c = x.shape[2];
            var qkv = c_attn.call(x).split(c, 2);
            var (q, k, v) = (Heads(qkv[0], b, t), Heads(qkv[1], b, t), Heads(qkv[2], b, t));
            var y = training && _dropout > 0 ? AttendWithDropout(q, k, v, t) : nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);
            return resid_drop.call(c_proj.call(y.transpose(1, 2).reshape(b, t, c)));
        }

        // Causal attention with a keyed dropout mask on the attention probabilities (what scaled_dot_product_attention
        // does with p > 0, but with the mask of each sample keyed like every other dropout).
        private Tensor AttendWithDropout(Tensor q, Tensor k, Tensor v, long t)
        {
            using var future = ones(t, t, dtype: ScalarType.Bool, device: q.device).triu(1);
            using var scale = (1.0 / Math.Sqrt(q.shape[^1])).ToScalar();
            using var minusInfinity = double.NegativeInfinity.ToScalar();
            var scores = q.matmul(k.transpose(-2, -1)).mul(scale).masked_fill(future, minusInfinity);
            return attn_drop.call(nn.functional.softmax(scores, -1)).matmul(v);
        }

        private Tensor Heads(Tensor x, long b, long t) => x.view(b, t, _heads, -1).transpose(1, 2);
    }

    /// <summary>The feed-forward part of a block.</summary>
    public sealed class Mlp : nn.Module<Tensor, Tensor>
    {
        private readonly Linear c_fc, c_proj;
        private readonly KeyedDropout drop;

        /// <summary>Creates the MLP of <paramref name="config"/>.</summary>
        public Mlp(GptConfig config) : base("mlp")
        {
            c_fc = Init(nn.Linear(config.Width, 4 * config.Width));
            c_proj = nn.Linear(4 * config.Width, config.Width);
            drop = new KeyedDropout(config.Dropout);
            ScaleResidual(c_proj, config.Layers);
            RegisterComponents();
        }

        /// <inheritdoc />
        public override Tensor forward(Tensor x) => drop.call(c_proj.call(nn.functional.gelu(c_fc.call(x))));
    }

    /// <summary>A pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x)).</summary>
    public sealed class Block : nn.Module<Tensor, Tensor>
    {
        private readonly LayerNorm ln_1, ln_2;
        private readonly CausalSelfAttention attn;
        private readonly Mlp mlp;

        /// <summary>Creates a block of <paramref name="config"/>.</summary>
        public Block(GptConfig config) : base("block")
        {
            ln_1 = nn.LayerNorm(config.Width);
            attn = new CausalSelfAttention(config);
            ln_2 = nn.LayerNorm(config.Width);
            mlp = new Mlp(config);
            RegisterComponents();
        }

        /// <inheritdoc />
        public override Tensor forward(Tensor x)
        {
            x = x + attn.call(ln_1.call(x));
            return x + mlp.call(ln_2.call(x));
        }
    }

    /// <summary>Final LayerNorm and the LM head.</summary>
    public sealed class Head : nn.Module<Tensor, Tensor>
    {
        private readonly LayerNorm ln_f;
        private readonly Linear lm_head;

        /// <summary>Creates the head of <paramref name="config"/>.</summary>
        public Head(GptConfig config) : base("head")
        {
            ln_f = nn.LayerNorm(config.Width);
            lm_head = nn.Linear(config.Width, config.VocabularySize, hasBias: false);
            nn.init.normal_(lm_head.weight, 0, 0.02);
            RegisterComponents();
        }

        /// <summary>The LM head's weight [vocabulary, width]; settable, so it can be tied to the token embedding.</summary>
        public Parameter Weight
        {
            get => lm_head.weight!;
            set => lm_head.weight = value;
        }

        /// <inheritdoc />
        public override Tensor forward(Tensor x) => lm_head.call(ln_f.call(x));
    }

    // GPT-2's initialisation: weights N(0, 0.02), biases zero, residual projections scaled by 1/sqrt(2 * layers).
    private static Linear Init(Linear linear, double std = 0.02)
    {
        nn.init.normal_(linear.weight, 0, std);
        if (linear.bias is { } bias) nn.init.zeros_(bias);
        return linear;
    }

    private static void ScaleResidual(Linear projection, int layers) => Init(projection, 0.02 / Math.Sqrt(2.0 * layers));
}

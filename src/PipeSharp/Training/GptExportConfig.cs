using System.Text.Json.Serialization;
using PipeSharp.Data;
using PipeSharp.Models;

namespace PipeSharp.Training;

/// <summary>
/// The <c>config.json</c> written beside an exported <see cref="Gpt"/>: the model's shape, every convention a reader
/// needs to rebuild it in another framework (see <c>docs/export.md</c>), and the tokenizer, so the file alone turns text
/// into token ids and back.
/// </summary>
/// <param name="VocabularySize">Token ids, and rows of <c>embed.wte.weight</c> and of the LM head.</param>
/// <param name="ContextLength">Rows of the position embedding <c>embed.wpe.weight</c>: the longest sequence.</param>
/// <param name="Layers">Transformer blocks, named <c>block0</c> ... in order.</param>
/// <param name="Width">Embedding width.</param>
/// <param name="Heads">Attention heads; each head has <c>Width / Heads</c> dimensions.</param>
/// <param name="Dropout">Dropout probability during training (inference uses none).</param>
/// <param name="TieEmbeddings">The LM head's weight is the token embedding (stored under both names).</param>
/// <param name="Tokenizer">How text maps to ids: <c>{"kind":"char","characters":...}</c> (id i is characters[i]) or <c>{"kind":"gpt2"}</c>; null for the sorting task.</param>
/// <param name="Step">Training steps the exported model took.</param>
public sealed record GptExportConfig(
    [property: JsonPropertyName("vocabulary_size")] int VocabularySize,
    [property: JsonPropertyName("context_length")] int ContextLength,
    [property: JsonPropertyName("layers")] int Layers,
    [property: JsonPropertyName("width")] int Width,
    [property: JsonPropertyName("heads")] int Heads,
    [property: JsonPropertyName("dropout")] double Dropout,
    [property: JsonPropertyName("tie_embeddings")] bool TieEmbeddings,
    [property: JsonPropertyName("tokenizer")] GptExportConfig.TokenizerEntry? Tokenizer,
    [property: JsonPropertyName("step")] long Step)
{
    /// <summary>What this file describes; readers check it.</summary>
    [JsonPropertyName("model_type")] public string ModelType => "pipesharp-gpt";

    /// <summary>Version of the layout described in docs/export.md; a change of layout raises it.</summary>
    [JsonPropertyName("format_version")] public int FormatVersion => 1;

    /// <summary>Epsilon of every LayerNorm (<c>ln_1</c>, <c>ln_2</c>, <c>ln_f</c>), which all have weight and bias.</summary>
    [JsonPropertyName("layer_norm_epsilon")] public double LayerNormEpsilon => 1e-5;

    /// <summary>The MLP's activation: the exact GELU, x * Phi(x) with the error function (not the tanh approximation).</summary>
    [JsonPropertyName("activation")] public string Activation => "gelu";

    /// <summary>Whether the LM head has a bias: it does not.</summary>
    [JsonPropertyName("lm_head_bias")] public bool LmHeadBias => false;

    /// <summary>How <c>attn.c_attn</c>'s 3 x width output rows are laid out.</summary>
    [JsonPropertyName("qkv_layout")] public string QkvLayout => "q, k, v: rows [0, width), [width, 2 width), [2 width, 3 width); head h is rows h*d..(h+1)*d of each, d = width / heads";

    /// <summary>Positions of a sequence of t tokens: 0 .. t-1, whatever came before.</summary>
    [JsonPropertyName("positions")] public string Positions => "0 .. t-1 for a sequence of t <= context_length tokens";

    /// <summary>A tokenizer, as written in <c>config.json</c>.</summary>
    /// <param name="Kind"><c>char</c> or <c>gpt2</c>.</param>
    /// <param name="Characters">For <c>char</c>: the characters in id order.</param>
    public sealed record TokenizerEntry(
        [property: JsonPropertyName("kind")] string Kind,
        [property: JsonPropertyName("characters"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Characters);

    /// <summary>The export config of a checkpoint's model.</summary>
    public static GptExportConfig From(LanguageModelCheckpointInfo info)
    {
        ArgumentNullException.ThrowIfNull(info);
        var c = info.Config;
        return new GptExportConfig(c.VocabularySize, c.ContextLength, c.Layers, c.Width, c.Heads, c.Dropout, c.TieEmbeddings,
            info.Tokenizer is TokenizerSpec t ? new TokenizerEntry(t.Kind, t.Characters) : null, info.Step);
    }
}

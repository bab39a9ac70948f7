using PipeSharp.Construction;
using static TorchSharp.torch;

namespace PipeSharp.Models;

// The GPT as a spec: each rank builds only its own stages' layers.
public static partial class Gpt
{
    /// <summary>
    /// The model of <see cref="Create"/> (the same layers, names and initialisation scheme) as a spec: layers
    /// <c>embed</c>, <c>block0</c>..., <c>head</c>, layer i built under the seed of (<paramref name="seed"/>, i), so its
    /// values come from the seed alone, not from the global generator's state as <see cref="Create"/>'s do. With tied embeddings the token table <c>embed.wte.weight</c> is the head's
    /// <c>head.lm_head.weight</c>; the tie's initializer (GPT-2's N(0, 0.02), seeded by the tie) gives both sides their
    /// value, so a rank holding the head never builds the embeddings.
    /// </summary>
    public static ModelSpec Spec(GptConfig config, long seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Check();
        long v = config.VocabularySize, w = config.Width;
        double block = 2 * 2 * w + (w * 3 * w + 3 * w) + (w * w + w) + (w * 4 * w + 4 * w) + (4 * w * w + w);
        var layers = new List<LayerSpec> { new("embed", _ => new Embeddings(config), (double)(v + config.ContextLength) * w) };
        for (int i = 0; i < config.Layers; i++) layers.Add(new($"block{i}", _ => new Block(config), block));
        layers.Add(new("head", _ => new Head(config), 2 * w + v * w));
        var ties = config.TieEmbeddings
            ? new[] { new TiedParameter(0, "wte.weight", config.Layers + 1, "lm_head.weight", () => normal(0, 0.02, [v, w])) }
            : [];
        return new ModelSpec(layers, seed, ties);
    }
}

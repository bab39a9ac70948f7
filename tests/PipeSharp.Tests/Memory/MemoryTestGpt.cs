using PipeSharp.Models;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Memory;

/// <summary>The GPT the in-process memory tests train, and a batch of random token ids for it.</summary>
internal static class MemoryTestGpt
{
    public static readonly GptConfig Config = new(VocabularySize: 64, ContextLength: 64, Layers: 4, Width: 128, Heads: 4);

    /// <summary>The model (global seed 3) and <paramref name="batch"/> sequences of inputs and targets (generator seed 5).</summary>
    public static (TorchSharp.Modules.Sequential Model, Tensor Input, Tensor Target) Create(int batch)
    {
        manual_seed(3);
        var g = new Generator(5);
        var x = randint(0, Config.VocabularySize, [batch, Config.ContextLength], generator: g);
        var y = randint(0, Config.VocabularySize, [batch, Config.ContextLength], generator: g);
        return (Gpt.Create(Config), x, y);
    }
}

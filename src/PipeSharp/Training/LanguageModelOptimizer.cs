using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Training;

/// <summary>
/// The optimizer the language-model trainer gives each stage: AdamW (betas 0.9, 0.95, eps 1e-8) with weight decay on
/// matrices and embeddings (2-D and up) and none on biases and norms, as nanoGPT does.
/// </summary>
internal static class LanguageModelOptimizer
{
    public static optim.Optimizer Create(IEnumerable<Parameter> parameters, double learningRate, double weightDecay)
    {
        var all = parameters.ToList();
        var groups = new List<AdamW.ParamGroup>
        {
            new(all.Where(p => p.dim() >= 2), learningRate, 0.9, 0.95, 1e-8, weightDecay, false, false),
            new(all.Where(p => p.dim() < 2), learningRate, 0.9, 0.95, 1e-8, 0.0, false, false),
        };
        return optim.AdamW(groups.Where(g => g.Parameters.Any()), learningRate);
    }
}

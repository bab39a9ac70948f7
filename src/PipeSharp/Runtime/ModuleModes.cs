using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>The training flags of a module and its submodules, kept before an evaluation and put back after it.</summary>
internal static class ModuleModes
{
    /// <summary>The training flag of <paramref name="root"/> and of each of its submodules, parents before their children.</summary>
    public static List<(nn.Module Module, bool Training)> Of(nn.Module root)
    {
        var modes = new List<(nn.Module, bool)>();
        void Visit(nn.Module m)
        {
            modes.Add((m, m.training));
            foreach (var child in m.children()) Visit(child);
        }
        Visit(root);
        return modes;
    }

    /// <summary>
    /// Puts the flags back. <c>train(bool)</c> sets a module's whole subtree, so they are restored parents first
    /// (the order <see cref="Of"/> lists them in).
    /// </summary>
    public static void Restore(List<(nn.Module Module, bool Training)> modes)
    {
        foreach (var (module, training) in modes) module.train(training);
    }
}

using static TorchSharp.torch;

namespace PipeSharp.Construction;

/// <summary>
/// How to build one layer of a <see cref="ModelSpec"/>: its name in the model and a factory. A pipeline calls the
/// factory only in the process whose rank holds the layer, with the global torch generator seeded by
/// <see cref="ModelSpec.LayerSeed"/>, so the layer's initial weights are the same whatever the layout.
/// </summary>
/// <param name="Name">The layer's name in the model: its parameters are named <c>Name.path</c> (e.g. <c>block0.attn.c_attn.weight</c>).</param>
/// <param name="Build">
/// Builds the layer for the given device. It must map one tensor to one tensor (<c>nn.Module&lt;Tensor, Tensor&gt;</c>)
/// and draw its random initial values from the global torch generator (as TorchSharp's modules do). It may build on
/// the device or on the CPU (the pipeline moves the layer to its device); the built-in specs build on the CPU, so the
/// values do not depend on the device's generator.
/// </param>
/// <param name="Cost">
/// The layer's relative cost for automatic balancing (<c>PipelineOptions.Ranks</c> without a balance):
/// the built-in specs give its parameter count, as the constructor that takes a built model balances by.
/// </param>
public sealed record LayerSpec(string Name, Func<Device, nn.Module> Build, double Cost = 1);

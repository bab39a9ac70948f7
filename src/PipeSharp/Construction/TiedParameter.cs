using static TorchSharp.torch;

namespace PipeSharp.Construction;

/// <summary>
/// One parameter used by two layers of a <see cref="ModelSpec"/>, such as a GPT's token embedding table that is also
/// its LM head's weight. Within one stage the two layers share one parameter object; in different stages each holds
/// its own copy, and the pipeline sums the copies' gradients before every step so that they stay identical.
/// </summary>
/// <param name="OwnerLayer">Index of the layer that owns the parameter (the first one that uses it).</param>
/// <param name="OwnerPath">The parameter's name inside that layer (e.g. <c>wte.weight</c>).</param>
/// <param name="UserLayer">Index of the later layer that uses it too.</param>
/// <param name="UserPath">The parameter's name inside that layer (e.g. <c>lm_head.weight</c>); it must be a settable
/// <c>Parameter</c> property of its module (as <c>Linear.weight</c> is).</param>
/// <param name="Initialize">
/// Optional: makes the parameter's initial value on the CPU, drawing from the global generator, which is seeded by
/// (model seed, tie) around the call. Both layers' copies then start from it, bitwise equal, and a rank holding only
/// the user layer never builds the owner layer. Without it, a rank that holds the user layer but not the owner layer
/// builds the owner layer (seeded as always) to copy the value, and frees it at once.
/// </param>
public sealed record TiedParameter(int OwnerLayer, string OwnerPath, int UserLayer, string UserPath, Func<Tensor>? Initialize = null);

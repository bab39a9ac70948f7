using PipeSharp.Backends;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// One layer's state sent from the process that held it to the process that will hold it, over a group of the two
/// (made by the backend; index 0 sends): its parameters and buffers (into the receiver's copy of the layer, built from
/// the model's spec, so shapes and order agree), which of its parameters have a gradient and those gradients, and
/// each parameter's optimizer state in the checkpoints' per-parameter format (<see cref="OptimizerStateFormat"/>).
/// </summary>
internal static class LayerTransfer
{
    /// <summary>Sends <paramref name="layer"/> (named <paramref name="layerName"/> in the model) with the optimizer state in <paramref name="blobs"/>.</summary>
    public static void Send(IProcessGroup group, nn.Module layer, string layerName, IReadOnlyDictionary<string, byte[]> blobs, CancellationToken cancellation)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var t in layer.state_dict().Values)
            if (t.NumberOfElements > 0) Exchange(group, t.detach().cpu().contiguous(), cancellation);
        var parameters = layer.named_parameters().ToList();
        Exchange(group, tensor(parameters.Select(p => p.parameter.grad is null ? 0L : 1L).ToArray()), cancellation);
        foreach (var (_, p) in parameters)
            if (p.grad is { } g && g.NumberOfElements > 0) Exchange(group, g.detach().cpu().contiguous(), cancellation);
        foreach (var (path, _) in parameters)
        {
            var blob = blobs.GetValueOrDefault($"{layerName}.{path}");
            Exchange(group, tensor(new long[] { blob?.Length ?? -1 }), cancellation);
            if (blob is { Length: > 0 }) Exchange(group, tensor(blob), cancellation);
        }
    }

    /// <summary>
    /// Receives what <see cref="Send"/> sent into <paramref name="layer"/> (its values copied in), adding the
    /// parameters' gradients (on the CPU) to <paramref name="gradients"/> and their optimizer state to
    /// <paramref name="blobs"/>, by model name.
    /// </summary>
    public static void Receive(IProcessGroup group, nn.Module layer, string layerName, Dictionary<string, byte[]> blobs,
        Dictionary<string, Tensor> gradients, CancellationToken cancellation)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var t in layer.state_dict().Values)
        {
            if (t.NumberOfElements == 0) continue;
            var buffer = empty(t.shape, t.dtype);
            Exchange(group, buffer, cancellation);
            t.copy_(buffer);
        }
        var parameters = layer.named_parameters().ToList();
        var flags = zeros(parameters.Count, ScalarType.Int64);
        Exchange(group, flags, cancellation);
        var has = flags.data<long>().ToArray();
        for (int k = 0; k < parameters.Count; k++)
        {
            if (has[k] == 0) continue;
            var p = parameters[k].parameter;
            var grad = empty(p.shape, p.dtype);
            if (grad.NumberOfElements > 0) Exchange(group, grad, cancellation);
            gradients[$"{layerName}.{parameters[k].name}"] = grad.DetachFromDisposeScope();
        }
        foreach (var (path, _) in parameters)
        {
            var length = zeros(1, ScalarType.Int64);
            Exchange(group, length, cancellation);
            long n = length.item<long>();
            if (n < 0) continue;
            var bytes = zeros(n, ScalarType.Byte);
            if (n > 0) Exchange(group, bytes, cancellation);
            blobs[$"{layerName}.{path}"] = bytes.data<byte>().ToArray();
        }
    }

    private static void Exchange(IProcessGroup group, Tensor buffer, CancellationToken cancellation) =>
        group.Broadcast(buffer, 0).Wait(cancellation);
}

using static TorchSharp.torch;

namespace PipeSharp.Transport;

/// <summary>
/// Moves activations and gradients between the ranks of a pipeline. A sent tensor belongs to the transport
/// until it is received; the receiver then owns it and disposes it.
/// </summary>
internal interface ITransport : IDisposable
{
    /// <summary>Delivers <paramref name="tensor"/> under <paramref name="key"/>; never blocks on the receiver.</summary>
    void Send(MessageKey key, Tensor tensor);

    /// <summary>Delivers <paramref name="tensor"/> under <paramref name="key"/> to job rank <paramref name="rank"/>, whatever the key's consumer.</summary>
    void SendTo(int rank, MessageKey key, Tensor tensor);

    /// <summary>Waits for the message with <paramref name="key"/>.</summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellation"/> was cancelled while waiting.</exception>
    Tensor Receive(MessageKey key, CancellationToken cancellation);

    /// <summary>Drops (and disposes) every message not yet received, e.g. after a failed step.</summary>
    void Clear();
}

using PipeSharp.Transport;
using static TorchSharp.torch;

namespace PipeSharp.InProcess;

/// <summary>A keyed mailbox for ranks that are threads of one process.</summary>
internal sealed class InProcessTransport : ITransport
{
    private readonly object _gate = new();
    private readonly Dictionary<MessageKey, Tensor> _mail = new();

    /// <inheritdoc />
    public void Send(MessageKey key, Tensor tensor)
    {
        lock (_gate)
        {
            if (!_mail.TryAdd(key, tensor))
                throw new InvalidOperationException($"A message ({key}) was sent twice.");
            Monitor.PulseAll(_gate);
        }
    }

    /// <inheritdoc />
    public void SendTo(int rank, MessageKey key, Tensor tensor) => Send(key, tensor); // one mailbox for every rank here

    /// <inheritdoc />
    public Tensor Receive(MessageKey key, CancellationToken cancellation)
    {
        using var wake = cancellation.Register(() => { lock (_gate) Monitor.PulseAll(_gate); });
        lock (_gate)
        {
            while (true)
            {
                if (_mail.Remove(key, out var tensor)) return tensor;
                cancellation.ThrowIfCancellationRequested();
                Monitor.Wait(_gate);
            }
        }
    }

    /// <inheritdoc />
    public void Clear()
    {
        lock (_gate)
        {
            foreach (var t in _mail.Values) t.Dispose();
            _mail.Clear();
        }
    }

    /// <inheritdoc />
    public void Dispose() => Clear();
}

using PipeSharp.Native;
using System.Diagnostics;
using System.Runtime.InteropServices;
using PipeSharp.Backends;
using PipeSharp.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Mpi;

/// <summary>
/// Moves activations and gradients between MPI ranks. A tensor is sent from its own native memory and received
/// straight into the native memory of a new tensor (no managed copy), with non-blocking MPI calls; the engine keeps
/// them moving while the workers compute, so transfers overlap computation. Messages are matched by key
/// (kind, consuming stage, sending stage, boundary value, micro-batch), which is encoded in the MPI tag, never by arrival
/// order. A tensor's <c>requires_grad</c> flag travels with it (in the header). Shapes and dtypes are sent
/// once per shape: each channel (peer, kind, stage, sending stage, value) has a few numbered shape slots, announced in a small header the
/// first time a shape is used; later messages name their slot in the tag. A new shape (a shorter last batch, a
/// different sequence length) simply takes the next slot.
/// </summary>
/// <remarks>
/// The receiving side takes each message as soon as it arrives (matched probe, then a receive into the new tensor),
/// rather than posting receives per key in advance: with shapes that may vary per message there is no buffer of the
/// right size to post before the header is known, and the probe sees messages in send order, which is what keeps a
/// header ahead of the data that uses its slot.
/// </remarks>
internal sealed class MpiTransport : ITransport
{
    private const int Slots = 8;
    private const int HeaderTag = 0;

    private readonly MpiEngine _engine;
    private readonly int _comm;
    private readonly int _stages;
    private readonly int _values;
    private readonly int _channels;
    private readonly Func<MessageKey, int> _destination;
    private readonly object _gate = new();
    // Several messages may wait under one key (e.g. a fast rank's outputs of the next forward pass): kept in send order.
    private readonly Dictionary<MessageKey, Queue<Tensor>> _mail = new();
    private readonly Dictionary<(int Peer, MessageKind Kind, int Channel), long[]?[]> _sent = new();
    private readonly Dictionary<(int Peer, MessageKind Kind, int Channel), int> _nextSlot = new();
    private readonly Dictionary<(int Peer, int Kind, int Channel, int Slot), ReceiveSlot> _received = new();
    // Slots whose spare tensor was used, to be made again when the poller finds nothing to do.
    private readonly Stack<ReceiveSlot> _refill = new();
    private readonly List<(MessageKey Key, Tensor Tensor, int Request, bool RequiresGrad)> _incoming = new();
    private readonly long[] _sentCounts; // per (destination rank, kind)

    /// <param name="engine">The process's MPI engine.</param>
    /// <param name="stages">Number of stages (for the tag encoding).</param>
    /// <param name="microBatches">Largest micro-batch count a message may carry.</param>
    /// <param name="destination">The MPI rank that consumes a message.</param>
    /// <param name="values">Number of boundary values a message may carry (1: a model of one value).</param>
    public MpiTransport(MpiEngine engine, int stages, int microBatches, Func<MessageKey, int> destination, int values = 1)
    {
        _engine = engine;
        _stages = stages;
        _values = values;
        // A channel is (consuming stage, sending stage + 1 in 0..stages+1, value).
        _channels = stages * (stages + 2) * values;
        _destination = destination;
        _sentCounts = new long[engine.Size * 3];
        long largest = Tag(MessageKind.Output, _channels - 1, microBatches - 1, Slots - 1);
        if (largest > engine.TagUpperBound)
            throw new ArgumentException(
                $"{stages} stages x {values} boundary values x {microBatches} micro-batches need MPI tags up to {largest}, but this MPI allows " +
                $"{engine.TagUpperBound}: use fewer micro-batches.", "microBatches");
        _comm = engine.Call(() =>
        {
            MpiNative.Check(MpiNative.MPI_Comm_dup(MpiNative.CommWorld, out int comm), "MPI_Comm_dup");
            return comm;
        });
        _poll = PollIncoming;
        engine.AddPoller(_poll);
    }

    private readonly Func<bool> _poll;
    private long _bytesSent;

    /// <summary>Bytes this transport has handed to MPI so far (tensor data and shape headers), for tests and benchmarks.</summary>
    internal long BytesSent => Interlocked.Read(ref _bytesSent);

    private long Tag(MessageKind kind, int channel, int microBatch, int slot) =>
        1 + (((microBatch * (long)_channels + channel) * 3 + (int)kind) * Slots + slot);

    private int Channel(MessageKey key)
    {
        if (key.Stage < 0 || key.Stage >= _stages || key.From < -1 || key.From > _stages || key.Value < 0 || key.Value >= _values)
            throw new ArgumentOutOfRangeException(nameof(key), key,
                $"this transport carries stages 0..{_stages - 1} and boundary values 0..{_values - 1}.");
        return (key.Stage * (_stages + 2) + key.From + 1) * _values + key.Value;
    }

    private MessageKey Key(MessageKind kind, int channel, int microBatch)
    {
        int value = channel % _values, rest = channel / _values;
        return new MessageKey(kind, rest / (_stages + 2), microBatch, rest % (_stages + 2) - 1, value);
    }

    /// <inheritdoc />
    public void Send(MessageKey key, Tensor tensor) => SendTo(_destination(key), key, tensor);

    /// <summary>How many messages of <paramref name="kind"/> this transport has sent to MPI rank <paramref name="rank"/> (itself included).</summary>
    public long MessagesSent(int rank, MessageKind kind) => Interlocked.Read(ref _sentCounts[rank * 3 + (int)kind]);

    /// <summary>Sends <paramref name="tensor"/> to MPI rank <paramref name="rank"/> under <paramref name="key"/>; takes ownership.</summary>
    public void SendTo(int rank, MessageKey key, Tensor tensor)
    {
        // The transport owns what it sends until MPI is done with the memory: out of any dispose scope, or the
        // caller's scope could free it (and the next tensor reuse it) before MPI has sent it.
        bool requiresGrad = tensor.requires_grad;
        var data = tensor.device_type == DeviceType.CPU && tensor.is_contiguous() ? tensor : tensor.cpu().contiguous();
        data.DetachFromDisposeScope();
        if (!ReferenceEquals(data, tensor)) tensor.Dispose();
        // The header: kind, channel, slot, dtype (with the requires_grad flag in bit 32), then the dimensions (read one by
        // one: Tensor.shape costs a microsecond).
        int channel = Channel(key);
        int dimensions = (int)data.Dimensions;
        var header = new long[4 + dimensions];
        header[0] = (long)key.Kind;
        header[1] = channel;
        header[3] = (long)data.dtype | (requiresGrad ? ReceiveSlot.RequiresGradFlag : 0);
        for (int d = 0; d < dimensions; d++) header[4 + d] = data.size(d);
        int slot;
        bool announce;
        lock (_gate)
        {
            var peerChannel = (rank, key.Kind, channel);
            if (!_sent.TryGetValue(peerChannel, out var slots)) _sent[peerChannel] = slots = new long[]?[Slots];
            slot = -1;
            for (int i = 0; i < Slots && slot < 0; i++)
                if (slots[i] is { } known && known.AsSpan(3).SequenceEqual(header.AsSpan(3))) slot = i;
            announce = slot < 0;
            if (announce)
            {
                slot = _nextSlot.GetValueOrDefault(peerChannel);
                _nextSlot[peerChannel] = (slot + 1) % Slots;
                slots[slot] = header;
            }
        }
        header[2] = slot;
        int tag = (int)Tag(key.Kind, channel, key.MicroBatch, slot);
        long bytes = data.NumberOfElements * data.ElementSize;
        if (bytes > int.MaxValue)
        {
            data.Dispose();
            throw new ArgumentException($"a {bytes}-byte message ({key}) is larger than one MPI message can carry (2 GB): use more micro-batches.");
        }
        Interlocked.Increment(ref _sentCounts[rank * 3 + (int)key.Kind]);
        Interlocked.Add(ref _bytesSent, bytes + (announce ? header.Length * sizeof(long) : 0));
        _engine.Submit(new SendOperation(_comm, rank, tag, announce ? header : null, data, (int)bytes));
    }

    /// <inheritdoc />
    public Tensor Receive(MessageKey key, CancellationToken cancellation)
    {
        using var waiting = _engine.Waiting();
        // Registered only before the first block: most messages arrive while this thread still polls.
        CancellationTokenRegistration wake = default, failed = default;
        bool registered = false;
        var spin = new MpiEngine.SpinState();
        try
        {
            while (true)
            {
                long seen;
                lock (_gate)
                {
                    // Queues stay once made (a key's queue is used again by every step), so a message costs no allocation.
                    if (_mail.TryGetValue(key, out var queue) && queue.TryDequeue(out var tensor)) return tensor;
                    if (_engine.Failure is RankFailedException f) throw new RankFailedException(f.Rank, f.Message);
                    if (_engine.Failure is { } e) throw new MpiException(e.Message, e);
                    cancellation.ThrowIfCancellationRequested();
                    seen = _deliveries;
                }
                // Poll MPI on this thread while no other thread does, so the message is taken the moment it arrives;
                // after SpinTime without progress, block in 1 ms slices (the engine's thread keeps looking in meanwhile).
                if (_engine.PollOrPause(ref spin)) continue;
                if (!registered)
                {
                    wake = cancellation.Register(Wake);
                    failed = _engine.FailureToken.Register(Wake);
                    registered = true;
                    continue; // look again: a cancellation or failure before the registration wakes nobody
                }
                using (_engine.Blocked())
                lock (_gate)
                {
                    if (_deliveries == seen) Monitor.Wait(_gate, 1);
                }
            }
        }
        finally
        {
            wake.Dispose();
            failed.Dispose();
        }
    }

    private long _deliveries;

    private void Wake()
    {
        lock (_gate)
        {
            _deliveries++; // not a message, but waiters must look again (cancellation, failure)
            Monitor.PulseAll(_gate);
        }
    }

    // Engine thread: takes every message that has arrived, and completes receives in flight.
    private bool PollIncoming()
    {
        bool progress = CompleteIncoming();
        while (true)
        {
            MpiNative.Check(MpiNative.MPI_Improbe(MpiNative.AnySource, MpiNative.AnyTag, _comm, out int flag, out int message, out var status), "MPI_Improbe");
            if (flag == 0)
            {
                // Nothing has arrived: a good time to make a spare tensor (one per poll, to stay quick).
                if (!progress && _refill.TryPop(out var refill)) refill.Refill();
                return progress;
            }
            progress = true;
            _engine.Heard(status.Source);
            MpiNative.Check(MpiNative.MPI_Get_count(ref status, MpiNative.Byte, out int bytes), "MPI_Get_count");
            if (status.Tag == HeaderTag)
            {
                var header = new long[bytes / sizeof(long)];
                MpiNative.ReceiveNow(header, bytes, ref message);
                var key = (status.Source, (int)header[0], (int)header[1], (int)header[2]);
                if (_received.TryGetValue(key, out var replaced)) replaced.Retire();
                _received[key] = ReceiveSlot.FromHeader(header, ElementSize);
                continue;
            }
            int t = status.Tag - 1;
            int slot = t % Slots;
            int kind = t / Slots % 3;
            int channel = t / Slots / 3 % _channels;
            int microBatch = t / Slots / 3 / _channels;
            if (!_received.TryGetValue((status.Source, kind, channel, slot), out var announced))
                throw new MpiException($"rank {status.Source} sent a message (tag {status.Tag}) whose shape was never announced.");
            if (announced.Bytes != bytes)
                throw new MpiException($"rank {status.Source} sent {bytes} bytes for a tensor of shape [{string.Join(",", announced.Shape)}] " +
                                       $"and type {announced.Dtype} ({announced.Bytes} bytes).");
            // Out of any dispose scope (this may run on a worker thread that polls while it waits, inside its action's
            // scope): a spare made ahead, or a new tensor; a large message in reused memory (ReceiveBuffers).
            var tensor = announced.Take(out bool wantsSpare);
            if (wantsSpare) _refill.Push(announced);
            MpiNative.Check(MpiNative.MPI_Imrecv(TensorMemory.Pointer(tensor), bytes, MpiNative.Byte, ref message, out int request), "MPI_Imrecv");
            _incoming.Add((Key((MessageKind)kind, channel, microBatch), tensor, request, announced.RequiresGrad));
            _engine.ReceiveStarted();
            // A small (eager) message is usually complete at once: then hand it over now, and leave any later arrival
            // to the next turn, so that the thread waiting for this one gets it without another poll of MPI first.
            if (CompleteIncoming()) return true;
        }
    }

    // Hands over the receives that have completed, in arrival order: a message never overtakes an earlier one with the
    // same key (e.g. a fast rank's outputs of the next forward pass behind those of this one).
    private bool CompleteIncoming()
    {
        bool progress = false;
        HashSet<MessageKey>? blocked = null;
        for (int i = 0; i < _incoming.Count; i++)
        {
            var (key, tensor, request, requiresGrad) = _incoming[i];
            int flag = 0;
            if (request != MpiNative.RequestNull)
            {
                MpiNative.Check(MpiNative.MPI_Test(ref request, out flag, out _), "MPI_Test");
                if (flag != 0) _engine.ReceiveEnded();
            }
            _incoming[i] = (key, tensor, request, requiresGrad);
            if (request != MpiNative.RequestNull || blocked?.Contains(key) == true)
            {
                (blocked ??= new()).Add(key);
                continue;
            }
            _incoming.RemoveAt(i--);
            if (requiresGrad) tensor.requires_grad_(true); // as it was sent: the receiver makes it a leaf and sends its gradient back
            Deliver(key, tensor);
            progress = true;
        }
        return progress;
    }

    private static long ElementSize(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 or ScalarType.Int64 or ScalarType.ComplexFloat32 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        ScalarType.ComplexFloat64 => 16,
        _ => 1,
    };

    private void Deliver(MessageKey key, Tensor tensor)
    {
        lock (_gate)
        {
            if (!_mail.TryGetValue(key, out var queue)) _mail[key] = queue = new Queue<Tensor>();
            queue.Enqueue(tensor);
            _deliveries++;
            Monitor.PulseAll(_gate);
        }
    }

    /// <inheritdoc />
    public void Clear()
    {
        lock (_gate)
        {
            foreach (var t in _mail.Values.SelectMany(q => q)) t.Dispose();
            _mail.Clear();
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Clear();
        _engine.RemovePoller(_poll, () =>
        {
            int comm = _comm;
            MpiNative.MPI_Comm_free(ref comm);
            foreach (var slot in _received.Values) slot.Retire();
        });
    }

    // Header (if the shape is new on this channel) then data, from the tensor's memory; the tensor is disposed when sent.
    private sealed class SendOperation(int comm, int rank, int tag, long[]? header, Tensor data, int bytes) : MpiOperation
    {
        private GCHandle _header;
        private int _headerRequest = MpiNative.RequestNull;
        private int _dataRequest = MpiNative.RequestNull;

        public override void Start()
        {
            if (header != null)
            {
                _header = GCHandle.Alloc(header, GCHandleType.Pinned);
                MpiNative.Check(MpiNative.MPI_Isend(_header.AddrOfPinnedObject(), header.Length * sizeof(long), MpiNative.Byte, rank, HeaderTag, comm, out _headerRequest), "MPI_Isend");
            }
            MpiNative.Check(MpiNative.MPI_Isend(TensorMemory.Pointer(data), bytes, MpiNative.Byte, rank, tag, comm, out _dataRequest), "MPI_Isend");
        }

        public override bool Test()
        {
            int a = 1, b;
            if (_headerRequest != MpiNative.RequestNull) MpiNative.Check(MpiNative.MPI_Test(ref _headerRequest, out a, out _), "MPI_Test");
            MpiNative.Check(MpiNative.MPI_Test(ref _dataRequest, out b, out _), "MPI_Test");
            return a != 0 && b != 0;
        }

        protected override void OnCompleted(Exception? error)
        {
            // On a failure the request may still be in flight: keep the memory (the process is going down).
            if (error != null) return;
            if (_header.IsAllocated) _header.Free();
            data.Dispose();
        }
    }
}

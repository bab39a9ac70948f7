using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Text;

namespace PipeSharp.Mpi;

/// <summary>
/// PipeSharp's side of MPI in one process. A turn of progress (<see cref="Turn"/>) starts queued non-blocking
/// operations, tests active ones, takes incoming messages as soon as they arrive (through pollers such as the
/// transport's), sends heartbeats, watches that every other rank is still heard from, and passes failure notices
/// between ranks. MPI is initialised <c>MPI_THREAD_SERIALIZED</c>, and turns are serialised by one lock: the engine's
/// own thread takes turns while nobody else does (and initialises and finalises MPI); a thread that waits for an
/// operation or a message takes turns itself meanwhile. No call blocks inside MPI, so every wait can be cancelled.
/// How threads wait is in MpiEngine.Waiting.cs; heartbeats, lost peers and failure notices in MpiEngine.Peers.cs.
/// </summary>
internal sealed partial class MpiEngine : IDisposable
{
    private readonly ConcurrentQueue<MpiOperation> _queue = new();
    private readonly List<MpiOperation> _active = new();
    private readonly List<Func<bool>> _pollers = new();
    private readonly Thread _thread;
    private readonly ManualResetEventSlim _wake = new(false);
    private readonly CancellationTokenSource _failed = new();
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Exception? _failure;
    private volatile bool _stop;
    private volatile bool _finalize;

    public MpiEngine(TimeSpan peerTimeout, TimeSpan heartbeatInterval)
    {
        PeerTimeout = peerTimeout;
        HeartbeatInterval = heartbeatInterval;
        _thread = new Thread(Loop) { IsBackground = true, Name = "PipeSharp MPI" };
        _thread.Start();
        try
        {
            _ready.Task.GetAwaiter().GetResult();
        }
        catch
        {
            _stop = true;
            _thread.Join();
            throw;
        }
    }

    public int Rank { get; private set; }
    public int Size { get; private set; }
    public int TagUpperBound { get; private set; }
    public string HostName { get; private set; } = "";
    public TimeSpan PeerTimeout { get; }
    public TimeSpan HeartbeatInterval { get; }

    /// <summary>The first failure (this rank's or another's); null while all is well.</summary>
    public Exception? Failure => Volatile.Read(ref _failure);

    /// <summary>Cancelled when the engine fails.</summary>
    public CancellationToken FailureToken => _failed.Token;

    /// <summary>Queues an operation; it completes with the engine's failure if the engine has failed.</summary>
    public T Submit<T>(T operation) where T : MpiOperation
    {
        if (Failure is { } failure) { operation.Complete(failure); return operation; }
        _queue.Enqueue(operation);
        // Start it on this thread if MPI is free (a send leaves at once); otherwise wake the engine's thread. Waking it
        // for every message would make it compete with this thread for MPI; if nobody waits for the operation, the
        // engine's thread finds it in flight within a millisecond and keeps it moving. Only the start: testing and
        // polling are left to whoever waits next (a whole turn here would add a microsecond or two to every send).
        bool started = _initialised && !Monitor.IsEntered(_progress) && Monitor.TryEnter(_progress); // never a turn inside a turn
        if (started)
        {
            try { if (!_stop) StartQueued(); }
            finally { Monitor.Exit(_progress); }
        }
        if (!started) _wake.Set();
        return operation;
    }

    /// <summary>Runs <paramref name="call"/> with MPI to itself (serialised with every other MPI call) and waits for it.</summary>
    public T Call<T>(Func<T> call)
    {
        var op = new CallOperation<T>(call);
        Wait(Submit(op), CancellationToken.None);
        return op.Result!;
    }

    /// <summary>Adds a poller, called on every turn of the engine loop; it returns true if it made progress.</summary>
    public void AddPoller(Func<bool> poll) => Call(() => { _pollers.Add(poll); return 0; });

    /// <summary>Removes a poller (and runs <paramref name="then"/> with MPI to itself, e.g. to free a communicator).</summary>
    public void RemovePoller(Func<bool> poll, Action? then = null)
    {
        if (Failure != null || _stop) return;
        Call(() => { _pollers.Remove(poll); then?.Invoke(); return 0; });
    }

    /// <summary>True while sends, receives or collectives are in flight (they need progress calls to complete).</summary>
    public bool InFlight => _active.Count > 0 || Volatile.Read(ref _pendingReceives) > 0;

    /// <summary>Counts receives in flight outside the engine's own operations (the transport's).</summary>
    public void ReceiveStarted() => Interlocked.Increment(ref _pendingReceives);

    /// <summary>See <see cref="ReceiveStarted"/>.</summary>
    public void ReceiveEnded() => Interlocked.Decrement(ref _pendingReceives);

    private int _pendingReceives;

    /// <summary>Fails the engine with <paramref name="error"/>: every waiter wakes with it.</summary>
    public void Fail(Exception error)
    {
        if (Interlocked.CompareExchange(ref _failure, error, null) != null) return;
        try { _failed.Cancel(); } catch (ObjectDisposedException) { }
        _wake.Set();
    }

    private void Loop()
    {
        try
        {
            Initialise();
        }
        catch (Exception e)
        {
            _ready.SetException(e);
            return;
        }
        _ready.SetResult();
        while (!_stop)
        {
            // A waiting thread that polls MPI does everything a turn does (heartbeats included): stay out of its way,
            // unless an operation is queued (it may be in the middle of a turn, past starting operations).
            if (SomeonePolls && _queue.IsEmpty)
            {
                _wake.Wait(1);
                _wake.Reset();
                continue;
            }
            bool progress;
            lock (_progress) progress = Turn();
            if (progress) continue;
            // A waiting thread polls MPI itself: then this thread only looks in every millisecond (heartbeats), so that
            // two threads of one process do not compete for the cores (the copy of a large message is done by whichever
            // polls). With nobody waiting, transfers in flight still need progress calls to move on (a large message
            // goes in fragments): keep polling without sleeping. With nothing at all, sleep until work is queued.
            if (InFlight && !SomeonePolls) { Thread.Yield(); continue; }
            _wake.Wait(1);
            _wake.Reset();
        }
        if (_finalize)
        {
            _finalizing.Set();
            lock (_progress) MpiNative.MPI_Finalize();
        }
    }

    /// <summary>
    /// Makes progress on the calling thread if no other thread is doing so: a thread that waits for MPI polls it
    /// itself, so a message it waits for is taken the moment it arrives, without a hand-over between threads.
    /// </summary>
    /// <returns>True if anything progressed.</returns>
    /// <remarks>
    /// If another thread is making progress, this waits for it (up to a millisecond) rather than spinning beside it:
    /// that thread may be copying a large message, and a spinning neighbour would take half its core.
    /// </remarks>
    public bool TryProgress()
    {
        if (!_initialised || Monitor.IsEntered(_progress) || !Monitor.TryEnter(_progress, TimeSpan.FromMilliseconds(1))) return false;
        try
        {
            return !_stop && Turn();
        }
        finally
        {
            Monitor.Exit(_progress);
        }
    }

    // One turn of progress: start queued operations, test active ones, run the pollers (incoming messages, control
    // messages), send heartbeats and check peers when due. The caller holds _progress: MPI is initialised
    // MPI_THREAD_SERIALIZED, and this lock is what serialises every call into it.
    private bool Turn()
    {
        bool progress = StartQueued();
        for (int i = _active.Count - 1; i >= 0; i--)
        {
            var op = _active[i];
            bool done;
            try { done = op.Test(); }
            catch (Exception e) { _active.RemoveAt(i); op.Complete(e); progress = true; continue; }
            if (!done) continue;
            _active.RemoveAt(i);
            op.Complete(null);
            progress = true;
        }
        if (Failure is { } f)
        {
            for (int i = _active.Count - 1; i >= 0; i--)
            {
                if (_active[i] is NoticeOperation) continue;
                _active[i].Complete(f);
                _active.RemoveAt(i);
            }
        }
        // Milliseconds from the coarse clock: a precise read on every turn would cost as much as a poll of MPI.
        long now = Environment.TickCount64;
        try
        {
            foreach (var poll in _pollers) progress |= poll();
            // Heartbeats and failure notices need millisecond promptness, not microsecond: every MPI call runs MPI's
            // whole progress engine, so the control communicator is polled only when the coarse clock has moved on
            // (every 1 to 4 ms, by the kernel's tick).
            if (now >= _nextControl)
            {
                progress |= PollControl();
                CheckPeers(now);
                _nextControl = now + 1;
            }
        }
        catch (Exception e)
        {
            Fail(e);
        }
        if (now >= _nextBeat)
        {
            SendHeartbeats();
            _nextBeat = now + (long)HeartbeatInterval.TotalMilliseconds;
        }
        return progress;
    }

    // Starts the queued operations (the caller holds _progress); true if there were any.
    private bool StartQueued()
    {
        bool started = false;
        while (_queue.TryDequeue(out var op))
        {
            started = true;
            if (Failure is { } failure && op is not NoticeOperation) { op.Complete(failure); continue; }
            try { op.Start(); _active.Add(op); }
            catch (Exception e) { op.Complete(e); }
        }
        return started;
    }

    private readonly object _progress = new();
    private long _nextBeat, _nextControl; // Environment.TickCount64
    private volatile bool _initialised;

    private void Initialise()
    {
        try
        {
            MpiNative.Check(MpiNative.MPI_Initialized(out int initialised), "MPI_Initialized");
            if (initialised == 0)
            {
                MpiNative.Check(MpiNative.MPI_Init_thread(IntPtr.Zero, IntPtr.Zero, MpiNative.ThreadSerialized, out int provided), "MPI_Init_thread");
                if (provided < MpiNative.ThreadSerialized)
                    throw new MpiException($"this MPI library provides thread level {provided}, but PipeSharp needs MPI_THREAD_SERIALIZED ({MpiNative.ThreadSerialized}).");
            }
        }
        catch (DllNotFoundException e)
        {
            throw new MpiException(
                $"the MPI library ({MpiNative.Library}) could not be loaded: install MPICH (on Debian/Ubuntu: apt-get install mpich) " +
                "and start the program with mpirun.mpich.", e);
        }
        MpiNative.Check(MpiNative.MPI_Comm_set_errhandler(MpiNative.CommWorld, MpiNative.ErrorsReturn), "MPI_Comm_set_errhandler");
        MpiNative.Check(MpiNative.MPI_Comm_rank(MpiNative.CommWorld, out int rank), "MPI_Comm_rank");
        MpiNative.Check(MpiNative.MPI_Comm_size(MpiNative.CommWorld, out int size), "MPI_Comm_size");
        MpiNative.Check(MpiNative.MPI_Comm_get_attr(MpiNative.CommWorld, MpiNative.TagUpperBoundKey, out var tagUb, out int found), "MPI_Comm_get_attr");
        TagUpperBound = found != 0 ? Marshal.ReadInt32(tagUb) : 32767;
        var name = new byte[256];
        MpiNative.Check(MpiNative.MPI_Get_processor_name(name, out int length), "MPI_Get_processor_name");
        HostName = Encoding.ASCII.GetString(name, 0, length);
        MpiNative.Check(MpiNative.MPI_Comm_dup(MpiNative.CommWorld, out _control), "MPI_Comm_dup");
        Rank = rank;
        Size = size;
        _hosts = GatherHostNames(size);
        _lastHeard = Enumerable.Repeat(Environment.TickCount64, size).ToArray();
        _beat = Marshal.AllocHGlobal(sizeof(int));
        Marshal.WriteInt32(_beat, rank);
        _initialised = true;
    }

    // Every rank's host name, for messages that name a lost peer (one all-gather at start-up).
    private string[] GatherHostNames(int size)
    {
        const int Width = 64;
        var mine = new byte[Width];
        var bytes = Encoding.UTF8.GetBytes(HostName);
        Array.Copy(bytes, mine, Math.Min(bytes.Length, Width));
        var all = new byte[Width * size];
        var send = GCHandle.Alloc(mine, GCHandleType.Pinned);
        var receive = GCHandle.Alloc(all, GCHandleType.Pinned);
        try
        {
            MpiNative.Check(MpiNative.MPI_Iallgather(send.AddrOfPinnedObject(), Width, MpiNative.Byte,
                receive.AddrOfPinnedObject(), Width, MpiNative.Byte, _control, out int request), "MPI_Iallgather");
            MpiNative.Complete(ref request);
        }
        finally
        {
            send.Free();
            receive.Free();
        }
        return Enumerable.Range(0, size).Select(r => Encoding.UTF8.GetString(all, r * Width, Width).TrimEnd('\0')).ToArray();
    }

    /// <summary>
    /// Stops the engine. If all is well, first waits (up to the peer timeout) until every rank gets here, then
    /// finalises MPI; after a failure it does not finalise (that could wait for a rank that is gone).
    /// </summary>
    public void Dispose()
    {
        if (_stop) return;
        if (Failure == null)
        {
            var barrier = Submit(new RequestOperation(() =>
            {
                MpiNative.Check(MpiNative.MPI_Ibarrier(_control, out int request), "MPI_Ibarrier");
                return [request];
            }));
            try
            {
                Wait(barrier, CancellationToken.None);
                _finalize = true;
            }
            catch (Exception)
            {
                // A rank failed on the way out: leave without finalising.
            }
        }
        _stop = true;
        _wake.Set();
        // MPI_Finalize over UCX's TCP transport can hang while closing a connection to a peer that is already
        // finalising (measured: about 1 run in 5 across hosts). Every rank has passed the barrier, so nothing is lost
        // by not waiting: the engine thread is a background thread and ends with the process.
        if (!_thread.Join(FinalizeTimeout) && _finalizing.IsSet)
            Console.Error.WriteLine($"rank {Rank}: MPI_Finalize did not return within {FinalizeTimeout.TotalSeconds:F0} s; leaving it to the process exit.");
        else
            _thread.Join();
    }

    private readonly ManualResetEventSlim _finalizing = new(false);

    /// <summary>How long <see cref="Dispose"/> waits for MPI_Finalize.</summary>
    public static TimeSpan FinalizeTimeout { get; } = TimeSpan.FromSeconds(5);

    private sealed class CallOperation<T>(Func<T> call) : MpiOperation
    {
        public T? Result { get; private set; }
        public override void Start() => Result = call();
        public override bool Test() => true;
    }

}

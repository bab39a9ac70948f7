using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace PipeSharp.Mpi;

/// <summary>
/// The one thread that talks to MPI. It initialises MPI, starts and tests every non-blocking operation, receives
/// incoming messages as soon as they arrive (through pollers such as the transport's), sends heartbeats and watches that
/// every other rank is still heard from, and passes failure notices between ranks. Other threads only queue work
/// and wait on managed events, so no wait ever blocks inside MPI and every wait can be cancelled.
/// </summary>
internal sealed class MpiEngine : IDisposable
{
    private const int HeartbeatTag = 1;
    private const int FailureTag = 2;

    private readonly ConcurrentQueue<MpiOperation> _queue = new();
    private readonly List<MpiOperation> _active = new();
    private readonly List<Func<bool>> _pollers = new();
    private readonly Thread _thread;
    private readonly ManualResetEventSlim _wake = new(false);
    private readonly CancellationTokenSource _failed = new();
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long[] _lastHeard = [];
    private Exception? _failure;
    private volatile bool _stop;
    private volatile bool _finalize;
    private int _waiters;
    private int _control = MpiNative.CommNull;
    private IntPtr _beat;

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

    /// <summary>
    /// How long the engine polls without pausing after its last progress while a thread of this process waits for
    /// MPI (that thread's core is idle meanwhile); after that, and while transfers are in flight with nobody waiting,
    /// it pauses <see cref="PollPause"/> between polls; with nothing to do it sleeps until work is queued (at most 1 ms).
    /// </summary>
    public static TimeSpan SpinTime { get; } = TimeSpan.FromMilliseconds(50);

    /// <summary>The pause between polls when not spinning.</summary>
    public static TimeSpan PollPause { get; } = TimeSpan.FromMicroseconds(50);

    /// <summary>Describes a rank for messages (its stage and replica, once a pipeline has said so).</summary>
    public Func<int, string> DescribeRank { get; set; } = r => $"rank {r}";

    /// <summary>The first failure (this rank's or another's); null while all is well.</summary>
    public Exception? Failure => Volatile.Read(ref _failure);

    /// <summary>Cancelled when the engine fails.</summary>
    public CancellationToken FailureToken => _failed.Token;

    /// <summary>Queues an operation; it completes with the engine's failure if the engine has failed.</summary>
    public T Submit<T>(T operation) where T : MpiOperation
    {
        if (Failure is { } failure) { operation.Complete(failure); return operation; }
        _queue.Enqueue(operation);
        _wake.Set();
        return operation;
    }

    /// <summary>Runs <paramref name="call"/> on the engine thread and waits for it (for setup calls such as MPI_Comm_split).</summary>
    public T Call<T>(Func<T> call)
    {
        var op = new CallOperation<T>(call);
        Submit(op).Wait(CancellationToken.None);
        return op.Result!;
    }

    /// <summary>Adds a poller, called on every turn of the engine loop; it returns true if it made progress.</summary>
    public void AddPoller(Func<bool> poll) => Call(() => { _pollers.Add(poll); return 0; });

    /// <summary>Removes a poller (and runs <paramref name="then"/> on the engine thread, e.g. to free a communicator).</summary>
    public void RemovePoller(Func<bool> poll, Action? then = null)
    {
        if (Failure != null || _stop) return;
        Call(() => { _pollers.Remove(poll); then?.Invoke(); return 0; });
    }

    [DllImport("libc", EntryPoint = "usleep")]
    private static extern int Usleep(uint microseconds);

    [DllImport("libc", EntryPoint = "mallopt")]
    private static extern int Mallopt(int parameter, int value);

    private static void Pause(TimeSpan time) => Usleep((uint)Math.Max(1, time.TotalMicroseconds));

    /// <summary>Notes that <paramref name="rank"/> was heard from (any message counts as a heartbeat).</summary>
    public void Heard(int rank) => Volatile.Write(ref _lastHeard[rank], Stopwatch.GetTimestamp());

    /// <summary>Marks that a thread waits for a message: the engine then polls without sleeping.</summary>
    public IDisposable Waiting()
    {
        Interlocked.Increment(ref _waiters);
        _wake.Set();
        return new Release(() => Interlocked.Decrement(ref _waiters));
    }

    /// <summary>Fails the engine with <paramref name="error"/>: every waiter wakes with it.</summary>
    public void Fail(Exception error)
    {
        if (Interlocked.CompareExchange(ref _failure, error, null) != null) return;
        try { _failed.Cancel(); } catch (ObjectDisposedException) { }
        _wake.Set();
    }

    /// <summary>
    /// Tells every other rank that this rank failed (the text says how) and fails this engine. Waits up to
    /// <paramref name="timeout"/> for the notices to leave.
    /// </summary>
    public void NotifyFailure(string text, TimeSpan timeout)
    {
        if (Failure is RankFailedException own && own.Rank == Rank) return; // told them already
        bool first = Failure is null;
        var bytes = Encoding.UTF8.GetBytes(text);
        var handle = GCHandle.Alloc(bytes, GCHandleType.Pinned);
        var op = new NoticeOperation(this, handle, bytes.Length);
        _queue.Enqueue(op); // even after a failure: a notice must still go out
        _wake.Set();
        op.Wait(timeout);
        if (first) Fail(new RankFailedException(Rank, text));
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
        long nextBeat = 0, lastProgress = 0;
        long spinTicks = (long)(SpinTime.TotalSeconds * Stopwatch.Frequency);
        while (!_stop)
        {
            bool progress = false;
            while (_queue.TryDequeue(out var op))
            {
                progress = true;
                if (Failure is { } failure && op is not NoticeOperation) { op.Complete(failure); continue; }
                try { op.Start(); _active.Add(op); }
                catch (Exception e) { op.Complete(e); }
            }
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
            try
            {
                foreach (var poll in _pollers) progress |= poll();
                progress |= PollControl();
            }
            catch (Exception e)
            {
                Fail(e);
            }
            long now = Stopwatch.GetTimestamp();
            if (now >= nextBeat)
            {
                SendHeartbeats();
                CheckPeers(now);
                nextBeat = now + (long)(HeartbeatInterval.TotalSeconds * Stopwatch.Frequency);
            }
            if (progress) { lastProgress = now; continue; }
            bool waited = Volatile.Read(ref _waiters) > 0;
            if (waited && now - lastProgress < spinTicks) { Thread.Yield(); continue; }
            if (waited || _active.Count > 0) { Pause(PollPause); continue; }
            _wake.Wait(1);
            _wake.Reset();
        }
        if (_finalize)
        {
            _finalizing.Set();
            MpiNative.MPI_Finalize();
        }
    }

    private void Initialise()
    {
        try
        {
            MpiNative.Check(MpiNative.MPI_Initialized(out int initialised), "MPI_Initialized");
            if (initialised == 0)
                MpiNative.Check(MpiNative.MPI_Init_thread(IntPtr.Zero, IntPtr.Zero, MpiNative.ThreadFunneled, out _), "MPI_Init_thread");
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
        _lastHeard = Enumerable.Repeat(Stopwatch.GetTimestamp(), size).ToArray();
        _beat = Marshal.AllocHGlobal(sizeof(int));
        KeepLargeBlocks();
        Marshal.WriteInt32(_beat, rank);
    }

    // Received activations are new tensors. glibc serves blocks above its mmap threshold (at most 32 MB by default)
    // with fresh pages from the kernel, which must be faulted in and zeroed on every receive: a 64 MB activation then
    // costs more to allocate than to transfer. Raising the threshold (and the trim threshold with it) keeps freed
    // large blocks in the heap for the next message of the same size. Best effort: other C libraries ignore it.
    private static void KeepLargeBlocks()
    {
        const int TrimThreshold = -1, MmapThreshold = -3;
        try
        {
            Mallopt(MmapThreshold, 512 << 20);
            Mallopt(TrimThreshold, 1024 << 20);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
        }
    }

    private void SendHeartbeats()
    {
        for (int r = 0; r < Size; r++)
        {
            if (r == Rank) continue;
            MpiNative.Check(MpiNative.MPI_Isend(_beat, 1, MpiNative.Byte, r, HeartbeatTag, _control, out int request), "MPI_Isend");
            MpiNative.MPI_Request_free(ref request);
        }
    }

    private void CheckPeers(long now)
    {
        if (Failure != null) return;
        for (int r = 0; r < Size; r++)
        {
            if (r == Rank) continue;
            double silent = (now - Volatile.Read(ref _lastHeard[r])) / (double)Stopwatch.Frequency;
            if (silent <= PeerTimeout.TotalSeconds) continue;
            Fail(new RankFailedException(r,
                $"rank {Rank} on {HostName}: {DescribeRank(r)} has sent nothing for {silent:F1} s (peer timeout " +
                $"{PeerTimeout.TotalSeconds:F0} s): that process stopped or the network link to it is down."));
            return;
        }
    }

    private bool PollControl()
    {
        bool progress = false;
        while (true)
        {
            MpiNative.Check(MpiNative.MPI_Improbe(MpiNative.AnySource, MpiNative.AnyTag, _control, out int flag, out int message, out var status), "MPI_Improbe");
            if (flag == 0) return progress;
            progress = true;
            MpiNative.Check(MpiNative.MPI_Get_count(ref status, MpiNative.Byte, out int count), "MPI_Get_count");
            var bytes = new byte[Math.Max(count, 1)];
            var handle = GCHandle.Alloc(bytes, GCHandleType.Pinned);
            try
            {
                MpiNative.Check(MpiNative.MPI_Imrecv(handle.AddrOfPinnedObject(), count, MpiNative.Byte, ref message, out int request), "MPI_Imrecv");
                int done;
                do MpiNative.Check(MpiNative.MPI_Test(ref request, out done, out _), "MPI_Test"); while (done == 0);
            }
            finally
            {
                handle.Free();
            }
            Heard(status.Source);
            if (status.Tag == FailureTag && Failure == null)
                Fail(new RankFailedException(status.Source, Encoding.UTF8.GetString(bytes, 0, count)));
        }
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
                using (Waiting()) barrier.Wait(CancellationToken.None);
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

    private sealed class Release(Action release) : IDisposable
    {
        private int _done;
        public void Dispose() { if (Interlocked.Exchange(ref _done, 1) == 0) release(); }
    }

    private sealed class CallOperation<T>(Func<T> call) : MpiOperation
    {
        public T? Result { get; private set; }
        public override void Start() => Result = call();
        public override bool Test() => true;
    }

    // A failure notice to every other rank on the control communicator.
    private sealed class NoticeOperation(MpiEngine engine, GCHandle text, int length) : MpiOperation
    {
        private readonly List<int> _requests = new();
        private readonly long _deadline = Stopwatch.GetTimestamp() + 5 * Stopwatch.Frequency;

        public override void Start()
        {
            for (int r = 0; r < engine.Size; r++)
            {
                if (r == engine.Rank) continue;
                MpiNative.Check(MpiNative.MPI_Isend(text.AddrOfPinnedObject(), length, MpiNative.Byte, r, FailureTag, engine._control, out int request), "MPI_Isend");
                _requests.Add(request);
            }
        }

        public override bool Test()
        {
            for (int i = 0; i < _requests.Count; i++)
            {
                int request = _requests[i];
                if (request == MpiNative.RequestNull) continue;
                MpiNative.MPI_Test(ref request, out int flag, out _);
                _requests[i] = request;
                if (flag == 0 && Stopwatch.GetTimestamp() < _deadline) return false;
            }
            return true;
        }

        // A notice still in flight at the deadline keeps its buffer: MPI may yet read it.
        protected override void OnCompleted(Exception? error)
        {
            if (_requests.All(r => r == MpiNative.RequestNull)) text.Free();
        }
    }
}

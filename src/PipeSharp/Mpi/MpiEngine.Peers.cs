using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

using PipeSharp.Backends;

namespace PipeSharp.Mpi;

/// <summary>
/// Watching the other ranks: heartbeats to every rank on a control communicator, a rank silent for the peer timeout
/// reported lost (by rank, host and role), and failure notices passed between ranks so that all stop at once.
/// </summary>
internal sealed partial class MpiEngine
{
    private const int HeartbeatTag = 1;
    private const int FailureTag = 2;

    private long[] _lastHeard = [];
    private int _control = MpiNative.CommNull;
    private IntPtr _beat;

    /// <summary>A rank's role, for messages (e.g. "replica 0, stage 2"), once a pipeline has said so.</summary>
    public Func<int, string>? RoleOf { get; set; }

    /// <summary>"rank 2 on node2 (replica 0, stage 2)": a rank, its host and its role.</summary>
    public string DescribeRank(int rank) =>
        $"rank {rank} on {(_hosts.Length > rank ? _hosts[rank] : "?")}" + (RoleOf is { } role ? $" ({role(rank)})" : "");

    private string[] _hosts = [];

    /// <summary>Notes that <paramref name="rank"/> was heard from (any message counts as a heartbeat).</summary>
    public void Heard(int rank) => Volatile.Write(ref _lastHeard[rank], Environment.TickCount64);

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
        var deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (!op.IsCompleted && Stopwatch.GetTimestamp() < deadline)
            if (!TryProgress()) op.Wait(TimeSpan.FromMilliseconds(1), CancellationToken.None);
        if (first) Fail(new RankFailedException(Rank, text));
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
            double silent = (now - Volatile.Read(ref _lastHeard[r])) / 1000.0;
            if (silent <= PeerTimeout.TotalSeconds) continue;
            string text = $"rank {Rank} on {HostName} lost {DescribeRank(r)}: it has sent nothing for {silent:F1} s (peer timeout " +
                          $"{PeerTimeout.TotalSeconds:F0} s), so that process stopped or the network link to it is down.";
            Fail(new RankFailedException(r, text));
            // Tell the ranks still reachable (those on this host first of all), so that they stop now too rather than
            // find out for themselves up to a heartbeat later, and say why.
            _queue.Enqueue(new NoticeOperation(this, GCHandle.Alloc(Encoding.UTF8.GetBytes(text), GCHandleType.Pinned), Encoding.UTF8.GetByteCount(text)));
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
            MpiNative.ReceiveNow(bytes, count, ref message);
            Heard(status.Source);
            if (status.Tag == FailureTag && Failure == null)
                Fail(new RankFailedException(status.Source, Encoding.UTF8.GetString(bytes, 0, count)));
        }
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

using PipeSharp.Backends;

namespace PipeSharp.Mpi;

/// <summary>
/// How a thread waits for MPI: it polls MPI itself (no hand-off between threads when its message arrives), briefly
/// without pause, then yielding its core between polls, then blocking in millisecond slices while the engine's thread
/// polls. The engine's thread stays out of the way of a thread that polls.
/// </summary>
internal sealed partial class MpiEngine
{
    private int _waiters, _blocked;

    /// <summary>
    /// How long a waiting thread polls MPI itself, without blocking, after the last progress when no transfer is in
    /// flight; then it blocks in slices of a millisecond while the engine's thread looks in every millisecond.
    /// </summary>
    public static TimeSpan SpinTime { get; } = TimeSpan.FromMilliseconds(1);

    /// <summary>
    /// Waits for <paramref name="operation"/>, polling MPI on this thread while no other thread does (for up to
    /// <see cref="SpinTime"/> after the last progress), then blocking in 1 ms slices while the engine thread polls.
    /// </summary>
    /// <exception cref="RankFailedException">Another rank failed or was lost.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellation"/> was cancelled.</exception>
    public void Wait(MpiOperation operation, CancellationToken cancellation)
    {
        using var waiting = Waiting();
        var spin = new SpinState();
        while (!operation.IsCompleted)
        {
            cancellation.ThrowIfCancellationRequested();
            if (PollOrPause(ref spin)) continue;
            using (Blocked()) operation.Wait(TimeSpan.FromMilliseconds(1), cancellation);
        }
        operation.ThrowIfFailed();
    }

    /// <summary>
    /// One step of a waiting thread's loop: polls MPI (<see cref="TryProgress"/>); without progress, polls again at
    /// once for <see cref="BusyPolls"/> polls (a reply is usually microseconds away, and giving the core up costs more
    /// than that), then yields the core between polls while transfers are in flight or for about
    /// <see cref="SpinTime"/>.
    /// </summary>
    /// <param name="spin">The caller's state of this wait, updated; a new one per wait.</param>
    /// <returns>False when the caller should block (up to a millisecond) instead of polling again.</returns>
    /// <remarks>
    /// The busy phase counts polls rather than reading a clock: on this kind of virtual machine a precise clock read
    /// costs as much as a poll of MPI, and it would be paid on every turn of the loop.
    /// </remarks>
    public bool PollOrPause(ref SpinState spin)
    {
        if (TryProgress())
        {
            spin.Idle = 0;
            return true;
        }
        if (++spin.Idle < BusyPolls) return true;
        long now = Environment.TickCount64; // coarse (a few ms at most) and cheap
        if (spin.Idle == BusyPolls) spin.IdleSince = now;
        if (!InFlight && now - spin.IdleSince >= (long)SpinTime.TotalMilliseconds) return false;
        Thread.Yield();
        return true;
    }

    /// <summary>Where a waiting thread is in <see cref="PollOrPause"/>'s phases.</summary>
    public struct SpinState
    {
        internal int Idle;
        internal long IdleSince;
    }

    /// <summary>
    /// How many polls without progress a waiting thread makes without giving up its core (tens of microseconds).
    /// Few, because with more threads than cores (several ranks on one machine) the thread it keeps out may be the
    /// one that computes what it waits for.
    /// </summary>
    public const int BusyPolls = 64;

    /// <summary>Marks that a thread waits for MPI (and polls it): the engine's thread then stays out of its way.</summary>
    public WaitingScope Waiting()
    {
        Interlocked.Increment(ref _waiters); // no need to wake the engine's thread: the waiter polls MPI itself
        return new WaitingScope(this);
    }

    /// <summary>A thread's wait for MPI (see <see cref="Waiting"/>); a struct, as one is taken for every message.</summary>
    public readonly struct WaitingScope(MpiEngine engine) : IDisposable
    {
        public void Dispose() => Interlocked.Decrement(ref engine._waiters);
    }

    /// <summary>
    /// Marks that a waiting thread blocks (up to a millisecond, after <see cref="PollOrPause"/> said so) and does not
    /// poll meanwhile: while every waiter blocks, the engine's thread polls for transfers in flight.
    /// </summary>
    public BlockedScope Blocked()
    {
        Interlocked.Increment(ref _blocked);
        return new BlockedScope(this);
    }

    /// <summary>See <see cref="Blocked"/>.</summary>
    public readonly struct BlockedScope(MpiEngine engine) : IDisposable
    {
        public void Dispose() => Interlocked.Decrement(ref engine._blocked);
    }

    // Waiters that poll MPI right now (rather than block).
    private bool SomeonePolls => Volatile.Read(ref _waiters) > Volatile.Read(ref _blocked);
}

using PipeSharp.Backends;

namespace PipeSharp.Mpi;

/// <summary>
/// A piece of non-blocking MPI work: started and tested in <see cref="MpiEngine"/>'s turns, waited for on any thread.
/// A wait never blocks inside MPI, so it can always be cancelled, and it ends at once if the engine fails.
/// </summary>
internal abstract class MpiOperation
{
    private readonly ManualResetEventSlim _done = new(false);
    private Exception? _error;

    /// <summary>Issues the MPI calls (in a turn of the engine).</summary>
    public abstract void Start();

    /// <summary>True once the MPI work is complete (in a turn of the engine).</summary>
    public abstract bool Test();

    /// <summary>Runs after completion, in a turn of the engine: release buffers, hand over results.</summary>
    protected virtual void OnCompleted(Exception? error) { }

    public bool IsCompleted => _done.IsSet;

    internal void Complete(Exception? error)
    {
        if (_done.IsSet) return;
        _error = error;
        try { OnCompleted(error); }
        finally { _done.Set(); }
    }

    /// <summary>Blocks until completion or for at most <paramref name="timeout"/>; true if complete.</summary>
    public bool Wait(TimeSpan timeout, CancellationToken cancellation) => _done.Wait(timeout, cancellation);

    /// <summary>After completion: throws the engine's failure, or the operation's own error.</summary>
    public void ThrowIfFailed()
    {
        if (_error is RankFailedException failed) throw new RankFailedException(failed.Rank, failed.Message);
        if (_error is not null) throw new MpiException(_error.Message, _error);
    }

}

/// <summary>An operation made of MPI requests; complete when every request is.</summary>
internal class RequestOperation : MpiOperation
{
    private readonly Func<int[]> _start;
    private int[] _requests = [];

    public RequestOperation(Func<int[]> start) => _start = start;

    public override void Start() => _requests = _start();

    public override bool Test()
    {
        bool all = true;
        for (int i = 0; i < _requests.Length; i++)
        {
            if (_requests[i] == MpiNative.RequestNull) continue;
            MpiNative.Check(MpiNative.MPI_Test(ref _requests[i], out int flag, out _), "MPI_Test");
            if (flag == 0) all = false;
        }
        return all;
    }
}

using System.Collections.Concurrent;
using TorchSharp;

namespace PipeSharp.Runtime;

/// <summary>
/// A dedicated thread for one rank. Jobs run in order, each inside its own dispose scope, with the rank's
/// intra-op thread count (which libtorch keeps per thread).
/// </summary>
internal sealed class RankWorker : IDisposable
{
    private readonly BlockingCollection<(Action Work, TaskCompletionSource Done)> _jobs = new();
    private readonly Thread _thread;
    private readonly int _intraOpThreads;

    public RankWorker(int rank, int intraOpThreads)
    {
        _intraOpThreads = intraOpThreads;
        _thread = new Thread(Loop) { IsBackground = true, Name = $"PipeSharp rank {rank}" };
        _thread.Start();
    }

    /// <summary>True while the worker thread runs.</summary>
    public bool IsAlive => _thread.IsAlive;

    /// <summary>Queues <paramref name="work"/>; the task completes when it has run (or faults with its exception).</summary>
    public Task Run(Action work)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _jobs.Add((work, done));
        return done.Task;
    }

    private void Loop()
    {
        foreach (var (work, done) in _jobs.GetConsumingEnumerable())
        {
            try
            {
                // Set for every job: libtorch sets up a thread's intra-op count lazily, from whatever another thread
                // set last, so a value set once at thread start can be silently replaced.
                if (torch.get_num_threads() != _intraOpThreads) torch.set_num_threads(_intraOpThreads);
                using (torch.NewDisposeScope()) work();
                done.SetResult();
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        }
    }

    /// <summary>Lets queued jobs finish, then ends the thread.</summary>
    public void Dispose()
    {
        _jobs.CompleteAdding();
        _thread.Join();
        _jobs.Dispose();
    }
}

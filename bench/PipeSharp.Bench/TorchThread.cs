using System.Collections.Concurrent;
using TorchSharp;

namespace PipeSharp.Bench;

/// <summary>
/// A dedicated OS thread with its own libtorch intra-op thread count, running jobs in order.
/// </summary>
/// <remarks>
/// libtorch (OpenMP build) keeps the thread count per OS thread, but initialises a thread's count lazily, at its
/// first parallel operation or get_num_threads() call, from the value that the LAST set_num_threads call on ANY
/// thread stored. A set_num_threads on a fresh thread is therefore undone if another thread calls set_num_threads
/// before this one's first operation. Calling get_num_threads() first forces the initialisation, so the
/// set_num_threads that follows sticks. (<see cref="ThreadCheck"/> demonstrates both.)
/// </remarks>
internal sealed class TorchThread : IDisposable
{
    private readonly BlockingCollection<(Action Work, TaskCompletionSource Done)> _jobs = new();
    private readonly Thread _thread;

    public TorchThread(string name, int intraOpThreads)
    {
        var ready = new TaskCompletionSource<int>();
        _thread = new Thread(() =>
        {
            torch.get_num_threads(); // force libtorch's lazy per-thread initialisation now (see remarks)
            torch.set_num_threads(intraOpThreads);
            ready.SetResult(torch.get_num_threads());
            Loop();
        }) { IsBackground = true, Name = name };
        _thread.Start();
        IntraOpThreads = ready.Task.Result;
        if (IntraOpThreads != intraOpThreads)
            throw new InvalidOperationException($"thread '{name}' asked for {intraOpThreads} intra-op threads but has {IntraOpThreads}.");
    }

    /// <summary>torch.get_num_threads() on this thread, read once it was set.</summary>
    public int IntraOpThreads { get; }

    public Task Run(Action work)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _jobs.Add((work, done));
        return done.Task;
    }

    public T Run<T>(Func<T> work)
    {
        T result = default!;
        Run(() => { result = work(); }).GetAwaiter().GetResult();
        return result;
    }

    private void Loop()
    {
        foreach (var (work, done) in _jobs.GetConsumingEnumerable())
        {
            try
            {
                using (torch.NewDisposeScope()) work();
                done.SetResult();
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        }
    }

    public void Dispose()
    {
        _jobs.CompleteAdding();
        _thread.Join();
        _jobs.Dispose();
    }
}

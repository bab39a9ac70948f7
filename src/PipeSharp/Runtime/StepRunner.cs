using System.Diagnostics;
using PipeSharp.Backends;
using PipeSharp.Schedules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Runs the parts of a step over the workers of this process: each rank's action list through its replica's
/// <see cref="ActionRunner"/>, work on every worker at once, and collective parts on the calling thread. The first
/// failure of any rank cancels the step everywhere and reaches the caller, naming the stage and micro-batch; across
/// processes the others are told, and the pipeline is then unusable.
/// </summary>
internal sealed class StepRunner : IDisposable
{
    private readonly IReadOnlyList<ReplicaRuntime> _replicas;
    private readonly IReadOnlyList<(ReplicaRuntime Replica, int Rank, RankWorker Worker)> _workers;
    private readonly IBackend _backend;
    private readonly ICollectives _collectives;
    private readonly int[][] _gradientsDoneAfter;
    private Exception? _broken;

    public StepRunner(PipelinePlan plan, IReadOnlyList<ReplicaRuntime> replicas,
        IReadOnlyList<(ReplicaRuntime Replica, int Rank, RankWorker Worker)> workers, IBackend backend, ICollectives collectives)
    {
        _replicas = replicas;
        _workers = workers;
        _backend = backend;
        _collectives = collectives;
        _gradientsDoneAfter = GradientsDoneAfter(plan.Schedule);
    }

    /// <summary>The worker threads of this process (one per local rank of each local replica).</summary>
    public int WorkerCount => _workers.Count;

    /// <summary>Number of worker threads still running.</summary>
    public int LiveWorkerThreads => _workers.Count(w => w.Worker.IsAlive);

    /// <summary>Throws if an earlier step failed across processes: the ranks no longer agree on where they are.</summary>
    public void ThrowIfBroken()
    {
        if (_broken != null)
            throw new InvalidOperationException(
                $"this pipeline stopped after a failure across processes ({_broken.Message}); its ranks cannot continue: end the process " +
                "and resume from the last checkpoint.", _broken);
    }

    /// <summary>Runs every rank's actions of <paramref name="step"/> held here (a replica without a share of the step sits out).</summary>
    public void RunActions(StepContext step, Action<ReplicaRuntime, int>? before = null) =>
        RunOnWorkers(step, (replica, rank) =>
        {
            if (step.Replicas[replica.Index] is null) return;
            before?.Invoke(replica, rank);
            RunRankActions(replica, rank, step);
        });

    private void RunRankActions(ReplicaRuntime replica, int rank, StepContext step)
    {
        var actions = step.Schedule.RankActions[rank];
        int jobRank = replica.Index * step.Schedule.RankCount + rank;
        for (int index = 0; index < actions.Count; index++)
        {
            var action = actions[index];
            step.Cancellation.ThrowIfCancellationRequested();
            long start;
            try
            {
                // The action's time starts when its inputs have arrived: waiting is idle time, not work.
                start = replica.Runner.Run(action, step);
            }
            catch (OperationCanceledException) when (step.Cancellation.IsCancellationRequested)
            {
                throw;
            }
            catch (RankFailedException e)
            {
                step.Fail(e);
                throw;
            }
            catch (Exception e)
            {
                var failure = new PipelineStageException(action, e);
                step.Fail(failure);
                throw failure;
            }
            if (replica.Index == step.TracedReplica) step.Record(jobRank, action, start, Stopwatch.GetTimestamp());
            step.Peak?.Sample();
            if (step.Training && _gradientsDoneAfter[rank][index] is var done and >= 0)
                _collectives.StageGradientsReady(replica, replica.Stages[done]!);
        }
    }

    /// <summary>
    /// Runs <paramref name="work"/> on every worker and waits for all of them. The first failure cancels the others;
    /// the caller gets the stage's exception, or OperationCanceledException if the caller cancelled. With
    /// <paramref name="untilDone"/>, a cancellation that comes while the work runs is not observed: the work is a
    /// whole (the optimizer step of every stage), and stopping it half way would leave some stages stepped.
    /// </summary>
    public void RunOnWorkers(StepContext step, Action<ReplicaRuntime, int> work, bool untilDone = false)
    {
        if (untilDone && step.Cancellation.IsCancellationRequested) Stop(step); // nothing has started: all or nothing

        var tasks = new Task[_workers.Count];
        for (int w = 0; w < _workers.Count; w++)
        {
            var (replica, rank, worker) = _workers[w];
            tasks[w] = worker.Run(() =>
            {
                try { work(replica, rank); }
                catch (Exception e) when (e is not OperationCanceledException) { step.Fail(e); throw; }
            });
        }
        try
        {
            Task.WaitAll(tasks);
        }
        catch (AggregateException)
        {
            // Reported below, after cleaning up.
        }
        if (step.Failure is not null || (!untilDone && step.Cancellation.IsCancellationRequested)) Stop(step);
    }

    /// <summary>
    /// Runs a collective part of the step on this thread; a failure stops the step like a worker's. With
    /// <paramref name="untilDone"/> (the parts after the optimizer step) a cancellation is not observed: the step is done.
    /// </summary>
    public void Collective(StepContext step, Action work, bool untilDone = false)
    {
        try
        {
            work();
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            step.Fail(e);
        }
        catch (OperationCanceledException)
        {
        }
        if (step.Failure is not null || (!untilDone && step.Cancellation.IsCancellationRequested)) Stop(step);
    }

    // Cleans up a failed or cancelled step and throws. Across processes the others are told, and this pipeline is
    // done: its ranks no longer agree on where they are.
    private void Stop(StepContext step)
    {
        foreach (var r in _replicas)
        {
            foreach (var s in r.Local) s.DropSaved();
            r.Transport.Clear();
        }
        Exception failure = step.Failure
            ?? _backend.NewFailureException()
            ?? new OperationCanceledException("The pipeline step was cancelled; no parameter was changed.", step.Cancellation);
        if (_backend.ProcessCount > 1)
        {
            _broken = failure;
            _collectives.ReportFailure(failure is OperationCanceledException ? new OperationCanceledException("the step was cancelled") : failure);
        }
        throw failure;
    }

    // For each rank's action list: the stage whose gradients are final after that action (its last B or W), or -1.
    private static int[][] GradientsDoneAfter(Schedule schedule)
    {
        var result = new int[schedule.RankCount][];
        for (int r = 0; r < schedule.RankCount; r++)
        {
            var list = schedule.RankActions[r];
            result[r] = Enumerable.Repeat(-1, list.Count).ToArray();
            var seen = new HashSet<int>();
            for (int i = list.Count - 1; i >= 0; i--)
                if (list[i].Kind is ActionKind.Backward or ActionKind.WeightGrad && seen.Add(list[i].Stage))
                    result[r][i] = list[i].Stage;
        }
        return result;
    }

    /// <summary>Stops the worker threads (queued work finishes first).</summary>
    public void Dispose()
    {
        foreach (var (_, _, w) in _workers) w.Dispose();
    }
}

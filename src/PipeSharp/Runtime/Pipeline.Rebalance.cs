using PipeSharp.Tracing;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

public sealed partial class Pipeline
{
    // What a move needs from the constructor: where layers come from, the workers (kept), the user's factories and the trigger.
    private sealed record Mover(
        ModelSource Source,
        (ReplicaRuntime Replica, int Rank, RankWorker Worker)[] Workers,
        Func<IEnumerable<Parameter>, optim.Optimizer> Optimizer,
        Func<optim.Optimizer, optim.lr_scheduler.LRScheduler>? Scheduler,
        RebalanceTrigger? Trigger);

    private readonly Mover _mover;
    private readonly List<LayerMove> _moves = new();

    /// <summary>Every move of layers between ranks so far, in order (by <see cref="Rebalance"/> or automatic rebalancing).</summary>
    public IReadOnlyList<LayerMove> Moves => _moves;

    /// <summary>
    /// Changes the layers per stage between two training steps: each layer whose rank changes moves from its old rank
    /// to its new one with its parameters, gradients and optimizer state (in one process, or across processes over the
    /// backend, the old rank freeing its tensors); the stages, their placement on ranks and the schedule stay. Training
    /// goes on exactly as it would have without the move. Across processes every process calls it with the same balance.
    /// </summary>
    /// <param name="balance">The new layers per stage: as many entries as <see cref="Balance"/>, adding up to the model's layer count.</param>
    /// <returns>The moves made, one per (from rank, to rank); also added to <see cref="Moves"/>.</returns>
    /// <exception cref="ArgumentException">The balance does not fit the model or the stages.</exception>
    /// <exception cref="NotSupportedException">
    /// The move would change how a tied parameter is held (within one stage or across two), the model's layers pass several
    /// named tensors, or layers would move between processes for a model the receiver cannot build (not made from a spec).
    /// </exception>
    public IReadOnlyList<LayerMove> Rebalance(IReadOnlyList<int> balance) => Move(balance, gain: null);

    private IReadOnlyList<LayerMove> Move(IReadOnlyList<int> balance, double? gain)
    {
        ThrowIfUnusable();
        ArgumentNullException.ThrowIfNull(balance);
        var after = Partitioning.Balance.Check(balance, _mover.Source.LayerCount);
        if (after.Count != _plan.Balance.Count)
            throw new ArgumentException(
                $"balance has {after.Count} entries but this pipeline has {_plan.Balance.Count} stages: a move keeps the stages and their ranks, give {_plan.Balance.Count} layer counts.",
                nameof(balance));
        if (after.SequenceEqual(_plan.Balance)) return [];
        if (!_boundaries.IsPlain)
            throw new NotSupportedException("layers that pass several named tensors cannot move yet: keep the balance this pipeline was made with.");
        var left = _plan.Balance;
        var plan = _plan with { Balance = after };
        var context = new MoveContext(_plan, plan, LayerMovePlan.Create(_plan.Balance, after, Schedule.StageToRank), _mover.Source, Backend,
            _mover.Optimizer, _mover.Scheduler);
        LayerMover.Check(context, _replicas[0]);
        _memory.CheckBeforeBuild(plan, _mover.Optimizer);

        OutsideDisposeScopes(() =>
        {
            var groups = LayerMover.PairGroups(context);
            foreach (var replica in _replicas) LayerMover.MoveReplica(replica, context, groups, Backend.FailureToken);
            _plan = plan;
            StageStateNames = Enumerable.Range(0, after.Count)
                .Select(s => _replicas[0].Stages[s] is { } st ? (IReadOnlyList<string>?)st.Module.state_dict().Keys.ToList() : null).ToList();
            Rewire();
        });

        var moves = context.Layers.Moves.Select(m => new LayerMove(_trainingSteps, m.From, m.To, m.Layers, gain)).ToList();
        _moves.AddRange(moves);
        _mover.Trigger?.Moved(left);
        return moves;
    }

    // Runs a move on a thread of its own: the tensors it makes to keep (layers built for this process, optimizer state)
    // must not join a dispose scope the caller may have open around TrainStep or Rebalance (scopes are per thread).
    private static void OutsideDisposeScopes(Action work)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try { work(); }
            catch (Exception e) { failure = e; }
        }) { Name = "PipeSharp rebalance", IsBackground = true };
        thread.Start();
        thread.Join();
        if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
    }

    // The parts made from the stages: collectives (across processes, their groups of the shared copies' owners), the
    // step runner over the same workers, the gradient reduction and deferred batch norm.
    private void Rewire()
    {
        _collectives.Dispose();
        _collectives = _plan.HostsAll
            ? new LocalCollectives(_replicas)
            : new CrossProcessCollectives(Backend, _replicas[0], _plan.Ranks, _plan.Replicas);
        _runner = new StepRunner(_plan, _replicas, _mover.Workers, Backend, _collectives);
        _gradients = new GradientReduction(_runner, _collectives, _replicas, Schedule.StageCount);
        if (_batchNorm is not null)
        {
            _batchNorm.Dispose();
            _batchNorm = new DeferredBatchNorm(_replicas, Schedule.StageCount);
        }
    }

    // Automatic rebalancing after a step: the trigger decides from the step's statistics (alike on every process), and
    // process 0's decision is made every process's through one small sum.
    private void RebalanceIfSlow()
    {
        if (_mover.Trigger is not { } trigger || LastStep is not { } step) return;
        var decision = trigger.AfterStep(step, _plan.Balance, Schedule.StageToRank, _plan.Ranks);
        if (!_plan.HostsAll)
        {
            var values = new double[2 + _plan.Balance.Count];
            if (Backend.ProcessIndex == 0 && decision is { } d)
            {
                values[0] = 1;
                values[1] = d.Gain;
                for (int s = 0; s < d.Balance.Count; s++) values[2 + s] = d.Balance[s];
            }
            var agreed = Backend.AllReduceSum(values, Backend.FailureToken);
            decision = agreed[0] == 1 ? (agreed.Skip(2).Select(v => (int)Math.Round(v)).ToList(), agreed[1]) : null;
        }
        if (decision is { } move) step.Moves = Move(move.Balance, move.Gain);
    }
}

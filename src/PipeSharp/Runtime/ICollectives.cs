using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// What the ranks of a step must agree on beyond the pipeline's own messages: gradients summed over data-parallel
/// replicas and over the copies of shared parameters, the global gradient norm, the loss, and the outputs of a
/// forward pass. <see cref="LocalCollectives"/> does it when every rank runs in this process,
/// <see cref="CrossProcessCollectives"/> with one rank per process, over the backend's collectives.
/// </summary>
internal interface ICollectives : IDisposable
{
    /// <summary>Makes every replica's parameters and buffers equal to replica 0's (once, before training).</summary>
    void MatchReplicas();

    /// <summary>
    /// Called on the worker thread right after <paramref name="stage"/> of <paramref name="replica"/> finished its
    /// last backward of the step: its gradients are final, so their reduction over replicas may start.
    /// </summary>
    void StageGradientsReady(ReplicaRuntime replica, StageRuntime stage);

    /// <summary>
    /// True if the workers sum the gradients over the replicas (<see cref="ReduceOnWorker"/>, every replica in this
    /// process); false if <see cref="ReduceGradients"/> does it all.
    /// </summary>
    bool ReducesOnWorkers { get; }

    /// <summary>
    /// On the worker of <paramref name="rank"/> of <paramref name="replica"/>, after every rank's actions (with
    /// <see cref="ReducesOnWorkers"/>): sums over the replicas this worker's share of the gradients of the rank's stages
    /// (the D workers of a rank split each stage's parameters by size) and gives every replica the sum, calling
    /// <paramref name="reduced"/> with each parameter once its sum is in place.
    /// </summary>
    void ReduceOnWorker(ReplicaRuntime replica, int rank, Action<StageRuntime, TorchSharp.Modules.Parameter>? reduced);

    /// <summary>
    /// After every rank's actions (and the workers' share, with <see cref="ReducesOnWorkers"/>): sums the rest of the
    /// gradients over replicas, and over the copies of shared parameters.
    /// </summary>
    void ReduceGradients(CancellationToken cancellation);

    /// <summary>The sum over all stages of a per-stage value (computed from one replica), the same on every rank.</summary>
    double SumOverStages(double[] perStage, CancellationToken cancellation);

    /// <summary>
    /// The loss of the whole batch (the sum of every replica's share), and the stop the ranks agree on, in the same
    /// reduction: the largest of every rank's <paramref name="stop"/> code (0 when no rank asks to stop).
    /// </summary>
    (double Loss, int Stop) TotalLoss(StepContext step, int stop, CancellationToken cancellation);

    /// <summary>
    /// The sums over every replica of <paramref name="count"/> values that its last stage computed
    /// (<paramref name="lastStageValues"/> of a replica index, called only where that replica's last stage runs), the
    /// same on every rank: the scalars of an evaluation, never the outputs.
    /// </summary>
    double[] SumOverReplicas(StepContext step, int count, Func<int, double[]> lastStageValues, CancellationToken cancellation);

    /// <summary>The element-wise sum of <paramref name="values"/> over the processes of the job (these values when there is one).</summary>
    double[] SumOverProcesses(double[] values, CancellationToken cancellation);

    /// <summary>The last stage's outputs of a forward pass, for the whole batch, on every rank.</summary>
    Tensor CollectOutputs(StepContext step, CancellationToken cancellation);

    /// <summary>Each stage's busy time of one replica, on every rank (across processes each holds only its own).</summary>
    double[] StageBusy(StepContext step, CancellationToken cancellation);

    /// <summary>The largest difference between copies of a shared parameter.</summary>
    double SharedCopyDifference();

    /// <summary>Tells the other processes (if any) that this one failed, so they stop too.</summary>
    void ReportFailure(Exception failure);
}

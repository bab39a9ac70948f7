using PipeSharp.Transport;
using static TorchSharp.torch;

namespace PipeSharp.Backends;

/// <summary>
/// The engine that connects the ranks of a pipeline: which ranks run in this process, how activations and gradients
/// move between ranks, the collectives the runtime needs (sums over groups of processes, gathers, a barrier), and how
/// a failure of one rank reaches the others. Pass one as <c>PipelineOptions.Backend</c>; without one
/// every rank is a thread of this process. PipeSharp has two: the in-process backend (the default) and
/// the MPI backend, <c>MpiCluster</c> (one rank per process under MPICH's mpirun).
/// </summary>
/// <remarks>
/// A job of P ranks per replica and D replicas has P x D ranks, numbered replica x P + rank. A backend runs either all
/// of them in this process or one per process (process i runs job rank i). The members the runtime uses to move
/// tensors are internal: a new engine (NCCL, sockets) is added to PipeSharp as a folder that implements this interface
/// (see docs/architecture.md, "Backends").
/// </remarks>
public interface IBackend
{
    /// <summary>Number of processes in the job (1 when every rank is a thread of this process).</summary>
    int ProcessCount { get; }

    /// <summary>This process's number, from 0 to <see cref="ProcessCount"/> - 1.</summary>
    int ProcessIndex { get; }

    /// <summary>The host this process runs on.</summary>
    string HostName { get; }

    /// <summary>The first failure of any process (this one's, another's notice, a lost process); null while all is well.</summary>
    Exception? Failure { get; }

    /// <summary>Cancelled as soon as any process fails or is lost.</summary>
    CancellationToken FailureToken { get; }

    /// <summary>Tells every other process that this one failed, so that they stop at once instead of waiting.</summary>
    void ReportFailure(Exception error);

    /// <summary>Sums <paramref name="values"/> element-wise over all processes; every process gets the sums.</summary>
    double[] AllReduceSum(double[] values, CancellationToken cancellation = default);

    /// <summary>Sums <paramref name="values"/> element-wise over all processes, exactly; every process gets the sums.</summary>
    long[] AllReduceSum(long[] values, CancellationToken cancellation = default);

    /// <summary>Waits until every process gets here.</summary>
    void Barrier(CancellationToken cancellation = default);

    /// <summary>
    /// The job ranks (replica x <paramref name="ranks"/> + rank) that run in this process: all of them, or exactly one.
    /// </summary>
    /// <exception cref="ArgumentException">The job's processes do not fit <paramref name="ranks"/> x <paramref name="replicas"/> (the message says how to start it).</exception>
    internal IReadOnlyList<int> HostedRanks(int ranks, int replicas);

    /// <summary>Processes of this job on this host (they share its cores).</summary>
    internal int ProcessesOnThisHost { get; }

    /// <summary>
    /// A transport for one replica's messages. <paramref name="destination"/> gives the job rank that consumes a message;
    /// <paramref name="stages"/>, <paramref name="microBatches"/> and <paramref name="values"/> (the boundary values a stage
    /// may pass; 1 for a model whose layers map one tensor to one tensor) bound the keys it will carry.
    /// </summary>
    internal ITransport CreateTransport(int stages, int microBatches, Func<MessageKey, int> destination, int values);

    /// <summary>
    /// Splits the processes into groups (a collective call: every process calls it, in the same order): processes with
    /// the same <paramref name="color"/> form a group, ordered by <paramref name="key"/>; a negative color joins none (null).
    /// </summary>
    internal IProcessGroup? Split(int color, int key);

    /// <summary>Sets how failure messages describe a job rank (e.g. its replica and stages).</summary>
    internal void DescribeRanksAs(Func<int, string> role);

    /// <summary>
    /// A new exception for <see cref="Failure"/>, to be thrown from the caller's stack (a <see cref="RankFailedException"/>
    /// when a rank failed or was lost), or null while all is well.
    /// </summary>
    internal Exception? NewFailureException();
}

/// <summary>
/// A group of processes made by <see cref="IBackend.Split"/>, with the non-blocking collectives the runtime needs on
/// contiguous CPU tensors. Every process of the group starts the same collectives in the same order.
/// </summary>
internal interface IProcessGroup
{
    /// <summary>Number of processes in the group.</summary>
    int Size { get; }

    /// <summary>This process's place in the group.</summary>
    int Index { get; }

    /// <summary>Sums <paramref name="buffer"/> over the group, in place.</summary>
    ICollectiveOperation AllReduceSum(Tensor buffer);

    /// <summary>Gathers every process's <paramref name="send"/> into <paramref name="receive"/> (one row per process, in group order).</summary>
    ICollectiveOperation AllGather(Tensor send, Tensor receive);

    /// <summary>Copies process <paramref name="root"/>'s <paramref name="buffer"/> to every process of the group.</summary>
    ICollectiveOperation Broadcast(Tensor buffer, int root);
}

/// <summary>A collective in flight.</summary>
internal interface ICollectiveOperation
{
    /// <summary>Waits until it is done; cancellable, and throws if the backend failed meanwhile.</summary>
    void Wait(CancellationToken cancellation);
}

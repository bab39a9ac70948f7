using PipeSharp.Backends;
using PipeSharp.Transport;
using static TorchSharp.torch;

namespace PipeSharp.InProcess;

/// <summary>
/// The default backend: every rank of the job is a thread of this process, messages go through keyed mailboxes, and a
/// collective over this one process is a copy (or nothing). Failures are handled by the step itself: there is no
/// other process to tell.
/// </summary>
internal sealed class InProcessBackend : IBackend
{
    public int ProcessCount => 1;
    public int ProcessIndex => 0;
    public string HostName => Environment.MachineName;
    public Exception? Failure => null;
    public CancellationToken FailureToken => CancellationToken.None;

    public void ReportFailure(Exception error) => ArgumentNullException.ThrowIfNull(error);

    public double[] AllReduceSum(double[] values, CancellationToken cancellation = default) =>
        (double[])(values ?? throw new ArgumentNullException(nameof(values))).Clone();

    public long[] AllReduceSum(long[] values, CancellationToken cancellation = default) =>
        (long[])(values ?? throw new ArgumentNullException(nameof(values))).Clone();

    public void Barrier(CancellationToken cancellation = default) => cancellation.ThrowIfCancellationRequested();

    IReadOnlyList<int> IBackend.HostedRanks(int ranks, int replicas) => Enumerable.Range(0, ranks * replicas).ToArray();

    int IBackend.ProcessesOnThisHost => 1;

    ITransport IBackend.CreateTransport(int stages, int microBatches, Func<MessageKey, int> destination, int values) => new InProcessTransport();

    IProcessGroup? IBackend.Split(int color, int key) => color < 0 ? null : new SingleProcessGroup();

    void IBackend.DescribeRanksAs(Func<int, string> role)
    {
    }

    Exception? IBackend.NewFailureException() => null;

    // A group of this one process: a sum or broadcast leaves the buffer as it is, a gather copies it.
    private sealed class SingleProcessGroup : IProcessGroup, ICollectiveOperation
    {
        public int Size => 1;
        public int Index => 0;
        public ICollectiveOperation AllReduceSum(Tensor buffer) => this;
        public ICollectiveOperation Broadcast(Tensor buffer, int root) => this;

        public ICollectiveOperation AllGather(Tensor send, Tensor receive)
        {
            using var noGrad = no_grad();
            receive.reshape(send.shape).copy_(send);
            return this;
        }

        public void Wait(CancellationToken cancellation) => cancellation.ThrowIfCancellationRequested();
    }
}

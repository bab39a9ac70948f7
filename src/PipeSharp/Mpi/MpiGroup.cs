using PipeSharp.Backends;
using static TorchSharp.torch;

namespace PipeSharp.Mpi;

/// <summary>An MPI communicator as the backend's process group: its collectives, waited for through the engine.</summary>
internal sealed class MpiGroup(MpiEngine engine, MpiCommunicator communicator) : IProcessGroup
{
    public int Size => communicator.Size;
    public int Index => communicator.Rank;

    public ICollectiveOperation AllReduceSum(Tensor buffer) => new Pending(engine, communicator.AllReduceSum(buffer));
    public ICollectiveOperation AllGather(Tensor send, Tensor receive) => new Pending(engine, communicator.AllGather(send, receive));
    public ICollectiveOperation Broadcast(Tensor buffer, int root) => new Pending(engine, communicator.Broadcast(buffer, root));

    private sealed class Pending(MpiEngine engine, MpiOperation operation) : ICollectiveOperation
    {
        public void Wait(CancellationToken cancellation) => engine.Wait(operation, cancellation);
    }
}

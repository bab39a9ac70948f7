using PipeSharp.Backends;
using PipeSharp.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Mpi;

/// <summary>
/// This process's place among the processes that <c>mpirun</c> started, and the MPI backend of a pipeline: MPI is set
/// up once per process, and a pipeline given this cluster (as <c>PipelineOptions.Backend</c>) runs one rank here and
/// talks to the others over MPI. Every rank keeps hearing from every other (heartbeats);
/// a rank that fails tells the others, and a rank that goes silent for <see cref="PeerTimeout"/> is reported as
/// lost, so no rank waits forever.
/// </summary>
/// <example>
/// <code>
/// // mpirun.mpich -np 4 dotnet MyTrainer.dll
/// using var cluster = MpiCluster.Initialize();
/// using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, Replicas = 2, MicroBatches = 4, Backend = cluster }, loss, optimizer);
/// float loss = pipe.TrainStep(input, target); // the same global batch on every rank
/// if (cluster.IsRoot) Console.WriteLine(loss);
/// </code>
/// </example>
public sealed class MpiCluster : IBackend, IDisposable
{
    private static MpiCluster? _current;
    private readonly MpiEngine _engine;
    private MpiCommunicator? _world;

    private MpiCluster(MpiEngine engine) => _engine = engine;

    /// <summary>True if this process was started by MPICH's <c>mpirun</c>/<c>mpiexec</c> (Hydra sets PMI_RANK and PMI_SIZE).</summary>
    public static bool IsLaunchedByMpirun =>
        Environment.GetEnvironmentVariable("PMI_RANK") != null && Environment.GetEnvironmentVariable("PMI_SIZE") != null;

    /// <summary>
    /// Sets up MPI for this process (once; later calls return the same cluster until it is disposed).
    /// </summary>
    /// <param name="peerTimeout">How long another rank may stay silent before it is reported lost. Default 30 s.</param>
    /// <exception cref="MpiException">The MPI library is missing or MPI could not start; the message says what to install.</exception>
    public static MpiCluster Initialize(TimeSpan? peerTimeout = null)
    {
        lock (typeof(MpiCluster))
        {
            if (_current != null) return _current;
            var timeout = peerTimeout ?? TimeSpan.FromSeconds(30);
            if (timeout <= TimeSpan.Zero)
                throw new ArgumentOutOfRangeException(nameof(peerTimeout), timeout, "the peer timeout must be positive.");
            var beat = TimeSpan.FromSeconds(Math.Min(1.0, timeout.TotalSeconds / 5));
            _current = new MpiCluster(new MpiEngine(timeout, beat));
            return _current;
        }
    }

    /// <summary>This process's rank in MPI_COMM_WORLD.</summary>
    public int Rank => _engine.Rank;

    /// <summary>The number of processes.</summary>
    public int Size => _engine.Size;

    /// <summary>True on rank 0, which prints progress and writes shared files.</summary>
    public bool IsRoot => Rank == 0;

    /// <summary>The host this rank runs on (MPI_Get_processor_name).</summary>
    public string HostName => _engine.HostName;

    /// <summary>How long another rank may stay silent before it is reported lost.</summary>
    public TimeSpan PeerTimeout => _engine.PeerTimeout;

    /// <summary>The first failure seen: this rank's, another rank's notice, or a lost peer; null while all is well.</summary>
    public Exception? Failure => _engine.Failure;

    /// <summary>Cancelled as soon as any rank fails or is lost.</summary>
    public CancellationToken FailureToken => _engine.FailureToken;

    internal MpiEngine Engine => _engine;

    internal MpiCommunicator World => _world ??= MpiCommunicator.Split(_engine, 0, Rank)!;

    /// <summary>
    /// Tells every other rank that this rank failed, with <paramref name="error"/>'s message, so that they stop at once
    /// instead of waiting. A pipeline does this itself when one of its stages fails.
    /// </summary>
    public void ReportFailure(Exception error)
    {
        ArgumentNullException.ThrowIfNull(error);
        if (error is RankFailedException) return; // another rank's failure (or this one's, already told): everyone knows
        string text = $"{_engine.DescribeRank(Rank)} failed: {error.Message}";
        _engine.NotifyFailure(text, TimeSpan.FromSeconds(2));
    }

    /// <summary>Sums <paramref name="values"/> element-wise over all ranks; every rank gets the sums.</summary>
    public double[] AllReduceSum(double[] values, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(values);
        using var buffer = torch.tensor(values, ScalarType.Float64);
        Wait(World.AllReduceSum(buffer), cancellation);
        return buffer.data<double>().ToArray();
    }

    /// <summary>Sums <paramref name="values"/> element-wise over all ranks, exactly (64-bit integers); every rank gets the sums.</summary>
    public long[] AllReduceSum(long[] values, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(values);
        using var buffer = torch.tensor(values, ScalarType.Int64);
        Wait(World.AllReduceSum(buffer), cancellation);
        return buffer.data<long>().ToArray();
    }

    /// <summary>Waits until every rank gets here.</summary>
    public void Barrier(CancellationToken cancellation = default) => AllReduceSum([0.0], cancellation);

    internal void Wait(MpiOperation operation, CancellationToken cancellation) => _engine.Wait(operation, cancellation);

    int IBackend.ProcessCount => Size;

    int IBackend.ProcessIndex => Rank;

    int IBackend.ProcessesOnThisHost =>
        int.TryParse(Environment.GetEnvironmentVariable("MPI_LOCALNRANKS"), out int n) && n > 0 ? n : Size; // Hydra says how many share the host

    IReadOnlyList<int> IBackend.HostedRanks(int ranks, int replicas)
    {
        if (Size != ranks * replicas)
            throw new ArgumentException(
                $"the MPI job has {Size} processes but the pipeline needs {ranks} ranks x {replicas} replicas = {ranks * replicas}: " +
                $"start it with mpirun -np {ranks * replicas}, or change the ranks or replicas so that their product is {Size}.", "backend");
        return [Rank];
    }

    ITransport IBackend.CreateTransport(int stages, int microBatches, Func<MessageKey, int> destination, int values) =>
        new MpiTransport(_engine, stages, microBatches, destination, values);

    IProcessGroup? IBackend.Split(int color, int key) =>
        MpiCommunicator.Split(_engine, color, key) is { } comm ? new MpiGroup(_engine, comm) : null;

    void IBackend.DescribeRanksAs(Func<int, string> role) => _engine.RoleOf = role;

    Exception? IBackend.NewFailureException() => Failure switch
    {
        RankFailedException lost => new RankFailedException(lost.Rank, lost.Message),
        { } other => new MpiException(other.Message, other),
        null => null,
    };

    /// <summary>
    /// Call just before this process exits with the non-zero code of a stop by a signal (130 after SIGINT, 143 after
    /// SIGTERM), after disposing the cluster: MPICH's mpirun (Hydra 4.0.x), after forwarding a signal, reports the exit
    /// code of the last process to exit on each host as 0, and returned 0 in some runs (4 of 40 measured). This makes it
    /// report this process's code: a small child process holds this process's output streams open until the process
    /// has ended (at most 10 s), then closes them, and prints nothing. Without mpirun, or not on Linux, it does nothing.
    /// </summary>
    /// <returns>True if the child was started.</returns>
    public static bool KeepExitCodeForMpirun() => HydraExitStatus.Keep();

    /// <summary>
    /// Waits for every rank to finish, then shuts MPI down. After a failure it leaves MPI as it is (finalising could
    /// wait for a rank that is gone); the process should then exit with a non-zero code.
    /// </summary>
    public void Dispose()
    {
        lock (typeof(MpiCluster))
        {
            _engine.Dispose();
            if (ReferenceEquals(_current, this)) _current = null;
        }
    }
}

namespace PipeSharp.Backends;

/// <summary>
/// Another rank of the job (another process) failed, or could no longer be reached, so this one stopped too. The
/// message names the rank and what it was doing (its stages, micro-batch and error, or how long it has been silent).
/// </summary>
public sealed class RankFailedException : Exception
{
    /// <summary>Creates the exception for <paramref name="rank"/>.</summary>
    public RankFailedException(int rank, string message) : base(message) => Rank = rank;

    /// <summary>The job rank (under MPI, the rank in MPI_COMM_WORLD) that failed or was lost.</summary>
    public int Rank { get; }
}

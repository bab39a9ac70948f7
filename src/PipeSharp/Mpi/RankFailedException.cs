namespace PipeSharp.Mpi;

/// <summary>
/// Another MPI rank failed, or could no longer be reached, so this rank stopped too. The message names the rank and
/// what it was doing (its stage, micro-batch and error, or how long it has been silent).
/// </summary>
public sealed class RankFailedException : Exception
{
    /// <summary>Creates the exception for <paramref name="rank"/>.</summary>
    public RankFailedException(int rank, string message) : base(message) => Rank = rank;

    /// <summary>The MPI rank (in MPI_COMM_WORLD) that failed or was lost.</summary>
    public int Rank { get; }
}

namespace PipeSharp.Mpi;

/// <summary>An MPI call failed, or MPI cannot be used in this process (for example, MPICH is not installed).</summary>
public sealed class MpiException : Exception
{
    /// <summary>Creates the exception with its message.</summary>
    public MpiException(string message) : base(message) { }

    /// <summary>Creates the exception with its message and cause.</summary>
    public MpiException(string message, Exception inner) : base(message, inner) { }
}

namespace PipeSharp.Checkpoints;

/// <summary>
/// A checkpoint's files are missing, truncated or changed (their length or SHA-256 differs from the manifest's), so
/// it cannot be used. Nothing was loaded; other checkpoints in the folder are untouched.
/// </summary>
public sealed class CheckpointCorruptException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CheckpointCorruptException(string message, string checkpointPath, string? file, IReadOnlyList<long> otherSteps, Exception? inner = null)
        : base(message, inner)
    {
        CheckpointPath = checkpointPath;
        File = file;
        OtherSteps = otherSteps;
    }

    /// <summary>The checkpoint's folder.</summary>
    public string CheckpointPath { get; }

    /// <summary>The damaged file's name in the folder, if one file is to blame.</summary>
    public string? File { get; }

    /// <summary>The steps of the folder's other checkpoints, which may still load (<see cref="CheckpointStore.LoadStep"/>).</summary>
    public IReadOnlyList<long> OtherSteps { get; }
}

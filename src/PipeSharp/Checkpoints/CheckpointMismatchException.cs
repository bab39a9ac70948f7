namespace PipeSharp.Checkpoints;

/// <summary>
/// A checkpoint does not belong to this run: it is of another model kind or config, or of a newer checkpoint format.
/// Nothing was changed.
/// </summary>
public sealed class CheckpointMismatchException(string message, Exception? inner = null) : Exception(message, inner);

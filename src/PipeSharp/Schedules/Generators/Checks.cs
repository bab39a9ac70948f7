namespace PipeSharp.Schedules.Generators;

internal static class Checks
{
    public static void Counts(int stages, int microBatches)
    {
        if (stages < 1)
            throw new ArgumentOutOfRangeException(nameof(stages), stages, "The number of stages must be at least 1.");
        if (microBatches < 1)
            throw new ArgumentOutOfRangeException(nameof(microBatches), microBatches, "The number of micro-batches must be at least 1.");
    }
}

using System.CommandLine;
using PipeSharp.Checkpoints;
using PipeSharp.Native;
using PipeSharp.Runtime;
using PipeSharp.Schedules;

namespace PipeSharp.Cli.Output;

/// <summary>Process exit codes.</summary>
internal static class ExitCodes
{
    public const int Success = 0;
    /// <summary>A pipeline stage failed, or <c>verify</c> found a mismatch.</summary>
    public const int Failure = 1;
    /// <summary>Bad command line or options; nothing ran.</summary>
    public const int Usage = 2;
    /// <summary>Stopped by SIGINT (Ctrl+C): 128 + 2, as a shell reports a process ended by it (see <see cref="Commands.StopSignals"/>).</summary>
    public const int Interrupted = 130;
    /// <summary>Stopped by SIGTERM: 128 + 15.</summary>
    public const int Terminated = 143;
}

/// <summary>Turns parse errors and the library's expected exceptions into one-line messages on stderr.</summary>
internal static class Errors
{
    /// <summary>
    /// The exceptions that mean "bad input or environment", not a bug: reported without a stack trace. Format errors
    /// come from schedule files; I/O errors (among them FileNotFoundException and DirectoryNotFoundException: a missing
    /// data file or checkpoint) from the files named on the command line; InvalidDataException from a data file that
    /// is not UTF-8; the checkpoint exceptions from a damaged checkpoint or one of another model.
    /// </summary>
    public static bool IsExpected(Exception e) =>
        e is ArgumentException or TorchLoadException or PipelineStageException or InvalidScheduleException or NonFiniteGradientException
            or Backends.RankFailedException or Mpi.MpiException
            or FormatException or IOException or UnauthorizedAccessException or InvalidDataException
            or CheckpointCorruptException or CheckpointMismatchException;

    /// <summary>Put before every error line: under mpirun, the rank that prints it.</summary>
    public static string Prefix { get; set; } = "";

    public static int Report(Exception e)
    {
        Console.Error.WriteLine($"{Prefix}error: {Message(e)}");
        return e is PipelineStageException or NonFiniteGradientException or Backends.RankFailedException or Mpi.MpiException ? ExitCodes.Failure : ExitCodes.Usage;
    }

    public static int ReportParseErrors(ParseResult parsed)
    {
        foreach (var error in parsed.Errors) Console.Error.WriteLine($"error: {error.Message}");
        var command = parsed.CommandResult.Command;
        string name = command == parsed.RootCommandResult.Command ? command.Name : $"{parsed.RootCommandResult.Command.Name} {command.Name}";
        Console.Error.WriteLine($"Run '{name} --help' to see the options.");
        return ExitCodes.Usage;
    }

    /// <summary>
    /// The exception's message without the " (Parameter 'x')" and "Actual value was y." lines .NET appends to
    /// argument exceptions: the library's messages already say what is wrong and what to do.
    /// </summary>
    public static string Message(Exception e)
    {
        // The library's advice names PipelineOptions; here the option is --on-nonfinite.
        if (e is NonFiniteGradientException nonFinite)
            return $"step {nonFinite.Step}: the loss is {nonFinite.Loss:G6} and the global gradient norm is {nonFinite.GradientNorm:G6}, " +
                   "which is not finite: training stopped before this step's optimizer step (no parameter changed). Lower --lr, " +
                   "clip with --clip, check the data, or add --on-nonfinite skip to skip such steps.";
        string message = e.Message;
        if (e is ArgumentOutOfRangeException { ActualValue: { } actual })
            message = RemoveSuffix(message, $"{Environment.NewLine}Actual value was {actual}.");
        if (e is ArgumentException { ParamName: { } name })
            message = RemoveSuffix(message, $" (Parameter '{name}')");
        // The commands always take the newest checkpoint of a folder: say how to fall back to an older one.
        if (e is CheckpointCorruptException { OtherSteps.Count: > 0 } corrupt)
            message += $" To use step {corrupt.OtherSteps[0]}, move the damaged folder {corrupt.CheckpointPath} out of the way.";
        return message;
    }

    private static string RemoveSuffix(string text, string suffix) =>
        text.EndsWith(suffix, StringComparison.Ordinal) ? text[..^suffix.Length] : text;
}

using PipeSharp.Schedules;

namespace PipeSharp.Runtime;

/// <summary>
/// A stage failed while running an action. Every other stage was stopped; the original exception is
/// <see cref="Exception.InnerException"/>.
/// </summary>
public sealed class PipelineStageException : Exception
{
    /// <summary>Creates the exception for <paramref name="action"/>, which threw <paramref name="inner"/>.</summary>
    public PipelineStageException(PipelineAction action, Exception inner)
        : base($"Stage {action.Stage} failed in {Describe(action)} of micro-batch {action.MicroBatch} (action {action}): " +
               $"{inner.GetType().Name}: {inner.Message}", inner)
    {
        Action = action;
    }

    /// <summary>The action that failed.</summary>
    public PipelineAction Action { get; }

    /// <summary>The stage that failed.</summary>
    public int Stage => Action.Stage;

    /// <summary>The micro-batch being processed.</summary>
    public int MicroBatch => Action.MicroBatch;

    private static string Describe(PipelineAction a) => a.Kind switch
    {
        ActionKind.Forward => "the forward",
        ActionKind.Backward => "the backward",
        _ => a.Kind.ToString(),
    };
}

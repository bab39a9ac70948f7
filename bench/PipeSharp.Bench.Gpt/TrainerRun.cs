using System.Diagnostics;
using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Training;

namespace PipeSharp.Bench.Speed;

/// <summary>
/// PipeSharp as <c>pipesharp train --model gpt</c> runs it: a <see cref="LanguageModelTrainer"/> over a
/// <see cref="Pipeline"/> with the pipeline options the CLI builds (TrainOptions.Pipeline), driven by
/// <see cref="LanguageModelTrainer.Run"/> for a given number of steps per measurement.
/// </summary>
internal sealed class TrainerRun : IDisposable
{
    private readonly LanguageModelTrainer _trainer;
    private readonly int _tokensPerStep;

    public TrainerRun(GptConfig config, ILanguageModelTask task, LanguageModelTrainingOptions options, int ranks, int microBatches,
        string schedule, int? threadsPerRank, Schedules.ActionCosts? costs = null, int replicas = 1)
        : this(config, task, options, Base with
        {
            // What TrainOptions.Pipeline gives for --ranks, --replicas, --microbatches, --schedule and --threads-per-rank.
            Replicas = replicas,
            Ranks = ranks,
            MicroBatches = microBatches,
            Schedule = schedule,
            ThreadsPerRank = threadsPerRank,
            ScheduleCosts = costs,
        })
    {
    }

    /// <summary>The trainer on the given pipeline options (e.g. a plan's, <see cref="Planning.PlanCandidate.ToPipelineOptions"/> of <see cref="Base"/>).</summary>
    public TrainerRun(GptConfig config, ILanguageModelTask task, LanguageModelTrainingOptions options, PipelineOptions pipeline)
    {
        _trainer = new LanguageModelTrainer(config, task, pipeline, options);
        _tokensPerStep = options.BatchSize * config.ContextLength;
    }

    /// <summary>The options every run shares: a non-finite gradient is an error, and a stop request as the CLI has.</summary>
    public static PipelineOptions Base => new() { NonFiniteGradients = NonFiniteGradientPolicy.Throw, Stop = new StopRequest() };

    public LanguageModelTrainer Trainer => _trainer;

    /// <summary>The statistics of the steps of the last measurement.</summary>
    public List<Tracing.StepStatistics> LastSteps { get; } = new();

    /// <summary>Runs <paramref name="steps"/> steps through <see cref="LanguageModelTrainer.Run"/>; tokens/s of their wall time.</summary>
    public double Measure(int steps)
    {
        using var stop = new CancellationTokenSource();
        int done = 0;
        double seconds = 0;
        LastSteps.Clear();
        var clock = Stopwatch.StartNew();
        _trainer.Run(afterStep: _ =>
        {
            LastSteps.Add(_trainer.Pipeline.LastStep!);
            if (++done < steps) return;
            seconds = clock.Elapsed.TotalSeconds;
            stop.Cancel(); // ends Run before its next step (the memory measurement after it is not timed)
        }, cancellation: stop.Token);
        return steps * (double)_tokensPerStep / seconds;
    }

    public void Dispose() => _trainer.Dispose();
}

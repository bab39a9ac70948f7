using PipeSharp.Models;
using PipeSharp.Planning;

namespace PipeSharp.Training;

/// <summary>
/// Plans the training of a <see cref="Gpt"/> on a task, as <see cref="LanguageModelTrainer"/> would run it: the
/// model of <see cref="Gpt.Spec"/>, micro-batches of the task's training sequences, the task's loss and the trainer's
/// AdamW; throughput in tokens per second (samples x context length). See <see cref="Planner"/>.
/// </summary>
public static class LanguageModelPlanner
{
    /// <summary>The plans, best first (see <see cref="Planner.Plan"/>); the request's batch is in sequences.</summary>
    /// <param name="config">The model's shape.</param>
    /// <param name="task">The task (its vocabulary must be the model's).</param>
    /// <param name="options">The training options (seed, learning rate, weight decay).</param>
    /// <param name="request">The batch, devices, budgets and fixed settings; <see cref="PlanRequest.TokensPerSample"/> is set to the context length.</param>
    /// <param name="cache">Where profiles are kept (null: measured every time).</param>
    /// <param name="log">Where to say what is being measured.</param>
    public static IReadOnlyList<PlanCandidate> Plan(GptConfig config, ILanguageModelTask task, LanguageModelTrainingOptions options, PlanRequest request,
        ProfileCache? cache = null, TextWriter? log = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(options);
        if (config.VocabularySize != task.VocabularySize)
            throw new ArgumentException($"the model's vocabulary ({config.VocabularySize}) differs from the task's ({task.VocabularySize}).", nameof(config));
        var spec = Gpt.Spec(config, options.Seed);
        return Planner.Plan(spec, samples => task.Batch(false, 0, samples, config.ContextLength, options.Seed), task.Loss,
            ps => LanguageModelOptimizer.Create(ps, options.LearningRate, options.WeightDecay),
            request with { TokensPerSample = config.ContextLength }, cache, log);
    }
}

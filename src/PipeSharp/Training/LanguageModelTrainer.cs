using PipeSharp.Native;
using System.Diagnostics;
using PipeSharp.Construction;
using PipeSharp.Models;
using PipeSharp.Partitioning;
using PipeSharp.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Training;

/// <summary>One training step as it happened.</summary>
/// <param name="Step">1-based number of the step just taken.</param>
/// <param name="Loss">Training loss of the batch.</param>
/// <param name="LearningRate">Rate used for the step.</param>
/// <param name="TokensPerSecond">Tokens of the batch divided by the step's wall time.</param>
/// <param name="StageBusy">Share of the step each stage worker computed.</param>
/// <param name="GradientNorm">Global gradient norm before clipping (null without clipping).</param>
/// <param name="ValidationLoss">Set on steps where the validation loss was measured.</param>
/// <param name="Skipped">
/// The step was skipped (its loss or gradient norm was not finite, with <see cref="NonFiniteGradientPolicy.SkipStep"/>):
/// no parameter changed. It still counts as a step: the next one takes the next batch and learning rate.
/// </param>
public sealed record TrainingStepReport(int Step, float Loss, double LearningRate, double TokensPerSecond,
    IReadOnlyList<double> StageBusy, double? GradientNorm, double? ValidationLoss, bool Skipped = false);

/// <summary>What a training run achieved.</summary>
public sealed record TrainingSummary(int Steps, TimeSpan Elapsed, double TokensPerSecond, IReadOnlyList<double> StageBusy,
    IReadOnlyList<StageMemory>? Memory, float LastLoss, double? ValidationLoss);

/// <summary>
/// Trains a <see cref="Gpt"/> through a <see cref="Pipeline"/>: AdamW with decoupled weight decay on matrices and
/// embeddings, linear warm-up and cosine decay, global gradient clipping over all stages, periodic validation. Under
/// <c>zb-h1</c> and <c>zb-v</c> without <see cref="PipelineOptions.ScheduleCosts"/> (and without MPI), the schedule is
/// ordered by F, I and W measured on a copy of the model.
/// The step is the only state besides the model and the optimizer: batches and learning rates are functions of it.
/// </summary>
public sealed class LanguageModelTrainer : IDisposable
{
    private readonly ILanguageModelTask _task;
    private readonly LearningRateSchedule _schedule;
    private readonly ModelSpec _spec;

    /// <summary>
    /// Builds the pipeline from <see cref="Gpt.Spec"/> with the options' seed: each process builds only the layers of
    /// its own stages, and the initial model is the same for every layout.
    /// </summary>
    public LanguageModelTrainer(GptConfig config, ILanguageModelTask task, PipelineOptions pipelineOptions, LanguageModelTrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(task);
        if (config.VocabularySize != task.VocabularySize)
            throw new ArgumentException(
                $"the model's vocabulary ({config.VocabularySize}) differs from the task's ({task.VocabularySize}).", nameof(config));
        if (options.Steps < 1) throw new ArgumentOutOfRangeException(nameof(options), options.Steps, "Steps must be at least 1.");
        if (options.BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(options), options.BatchSize, "BatchSize must be at least 1.");
        PipelinePlan.CheckMaxGradNorm(options.MaxGradNorm); // before the model is built
        Config = config;
        Options = options;
        _task = task;
        _schedule = new LearningRateSchedule(options.LearningRate, options.WarmupSteps, options.Steps, options.MinLearningRate);
        manual_seed(options.Seed); // the stream dropout draws from; the weights come from the spec's layer seeds
        _spec = Gpt.Spec(config, options.Seed);
        if (options.BalanceByTime && pipelineOptions.Balance is null && pipelineOptions.BalanceMode == BalanceMode.Parameters)
            pipelineOptions = pipelineOptions with { BalanceMode = BalanceMode.Time };
        // The balance modes that measure do it on the first training batch, unless given another.
        Tensor? profile = null;
        if (pipelineOptions.Balance is null && pipelineOptions.BalanceMode is BalanceMode.Time or BalanceMode.Auto && pipelineOptions.ProfileInput is null)
        {
            var (x, y) = _task.Batch(false, 0, options.BatchSize, config.ContextLength, options.Seed);
            y.Dispose();
            profile = x;
            pipelineOptions = pipelineOptions with { ProfileInput = x };
        }
        // Not across MPI processes: each would measure other costs, and every rank must build the same schedule.
        if (pipelineOptions.ScheduleCosts is null && pipelineOptions.Backend is null && ZeroBubbleCosts.Applies(pipelineOptions.Schedule))
            pipelineOptions = pipelineOptions with { ScheduleCosts = MeasuredCosts(pipelineOptions) };
        // The spec's costs are the layers' parameter counts; a tied table is counted once.
        ParameterCount = (long)_spec.Layers.Sum(l => l.Cost) - (config.TieEmbeddings ? (long)config.VocabularySize * config.Width : 0);
        pipelineOptions = pipelineOptions with { MaxGradNorm = options.MaxGradNorm, DropoutSeed = options.Seed };
        // Built from the spec: each process (under MPI) builds only the layers of its own stages.
        try
        {
            Pipeline = new Pipeline(_spec, pipelineOptions, task.Loss, MakeOptimizer);
        }
        finally
        {
            profile?.Dispose();
        }
    }

    /// <summary>The model's shape.</summary>
    public GptConfig Config { get; }

    /// <summary>The model's parameters (a tied embedding counted once), whichever stages this process holds.</summary>
    public long ParameterCount { get; }

    /// <summary>The training options.</summary>
    public LanguageModelTrainingOptions Options { get; }

    /// <summary>The pipeline that holds the model.</summary>
    public Pipeline Pipeline { get; }

    /// <summary>Steps taken so far (the next step's 0-based index); set it when resuming from a checkpoint.</summary>
    public int Step { get; set; }

    /// <summary>
    /// Runs the remaining steps, calling <paramref name="onStep"/> after each. Ends early after a step in which the
    /// ranks agreed to stop (<see cref="PipelineOptions.Stop"/>, <see cref="StopRequest.Agreed"/>): every rank then ends
    /// at the same <see cref="Step"/>, which is what a checkpoint saved after a stop needs. A step whose loss or
    /// gradient norm is not finite throws <see cref="NonFiniteGradientException"/> naming it (the run's step number),
    /// or with <see cref="NonFiniteGradientPolicy.SkipStep"/> is skipped and counted (its report says so).
    /// </summary>
    /// <param name="onStep">Gets every step's report.</param>
    /// <param name="afterStep">Runs after each step's report (e.g. to save a checkpoint), also after the step a stop was agreed in.</param>
    /// <param name="cancellation">
    /// Cancels the step in progress (it changes nothing). Across MPI processes that stops the pipeline for good, as a
    /// failure does: to stop a run there, use <see cref="PipelineOptions.Stop"/>.
    /// </param>
    public TrainingSummary Run(Action<TrainingStepReport>? onStep = null, Action<int>? afterStep = null, CancellationToken cancellation = default)
    {
        var clock = Stopwatch.StartNew();
        long tokens = 0;
        double busyWall = 0;
        var busy = new double[Pipeline.Schedule.RankCount];
        float lastLoss = float.NaN;
        double? validation = null;
        int first = Step;
        var stop = Pipeline.Options.Stop;
        while (Step < Options.Steps && !cancellation.IsCancellationRequested && stop?.Agreed is null)
        {
            double lr = _schedule.At(Step);
            Pipeline.SetLearningRate(lr);
            Pipeline.TrainingSteps = Step; // the dropout masks of step Step, also after a resume
            var (x, y) = _task.Batch(false, Step, Options.BatchSize, Config.ContextLength, Options.Seed);
            try
            {
                lastLoss = Pipeline.TrainStep(x, y, cancellation);
            }
            catch (NonFiniteGradientException e)
            {
                // Named by the run's step (the pipeline counts only its own calls, not those before a resume).
                throw new NonFiniteGradientException(Step + 1, e.Loss, e.GradientNorm, e);
            }
            finally
            {
                x.Dispose();
                y.Dispose();
            }
            Step++;
            var stats = Pipeline.LastStep!;
            var rankBusy = RankBusy(stats);
            if (Step > first + 1 || Options.Steps - first == 1)
            {
                tokens += (long)Options.BatchSize * Config.ContextLength;
                busyWall += stats.WallSeconds;
                for (int r = 0; r < busy.Length; r++) busy[r] += rankBusy[r] * stats.WallSeconds;
            }
            bool evaluate = Step == Options.Steps || (Options.EvalEvery > 0 && Step % Options.EvalEvery == 0);
            double? report = evaluate ? validation = Evaluate(Options.EvalBatches) : null;
            onStep?.Invoke(new TrainingStepReport(Step, lastLoss, lr,
                Options.BatchSize * Config.ContextLength / stats.WallSeconds, rankBusy, stats.GradientNorm, report, stats.Skipped));
            afterStep?.Invoke(Step);
        }
        IReadOnlyList<StageMemory> memory;
        using (var sample = _task.Batch(false, 0, Options.BatchSize, Config.ContextLength, Options.Seed).Input)
            memory = Pipeline.MeasureMemory(sample); // with MPI, every process takes part

        return new TrainingSummary(Step - first, clock.Elapsed, busyWall > 0 ? tokens / busyWall : 0,
            busy.Select(b => busyWall > 0 ? b / busyWall : 0).ToList(), memory, lastLoss, validation);
    }

    /// <summary>
    /// The mean loss over <paramref name="batches"/> validation batches (pipelined forward, no gradients, the loss
    /// computed on the last stage: only scalars cross ranks, see <see cref="Pipeline.Evaluate(Tensor, Tensor, CancellationToken)"/>).
    /// </summary>
    public double Evaluate(int batches)
    {
        double total = 0;
        for (int k = 0; k < batches; k++)
        {
            using var scope = NewDisposeScope();
            var (x, y) = _task.Batch(true, k, Options.BatchSize, Config.ContextLength, Options.Seed);
            total += Pipeline.Evaluate(x, y);
        }
        return total / Math.Max(1, batches);
    }

    /// <summary>Logits of token ids [B, t] through the pipeline (for generation).</summary>
    public Tensor Logits(Tensor tokens) => Pipeline.Forward(tokens);

    // F, I and W measured on one micro-batch of the first training batch, for the zero-bubble generators' order.
    private Schedules.ActionCosts MeasuredCosts(PipelineOptions pipelineOptions)
    {
        var (x, y) = _task.Batch(false, 0, Options.BatchSize, Config.ContextLength, Options.Seed);
        using (x)
        using (y)
        {
            var inputs = Runtime.MicroBatches.Split(x, pipelineOptions.MicroBatches * pipelineOptions.Replicas, "batchSize");
            var targets = Runtime.MicroBatches.Split(y, pipelineOptions.MicroBatches * pipelineOptions.Replicas, "batchSize");
            try
            {
                return ZeroBubbleCosts.Measure(Config, _task, inputs[0], targets[0], pipelineOptions.ThreadsPerRank ?? 1);
            }
            finally
            {
                foreach (var t in inputs.Concat(targets)) t.Dispose();
            }
        }
    }

    // Each stage worker's busy share: its pieces' busy seconds over the step's wall time.
    private IReadOnlyList<double> RankBusy(Tracing.StepStatistics stats)
    {
        var busy = new double[Pipeline.Schedule.RankCount];
        for (int s = 0; s < stats.StageBusySeconds.Count; s++) busy[Pipeline.Schedule.StageToRank[s]] += stats.StageBusySeconds[s];
        return busy.Select(b => stats.WallSeconds > 0 ? Math.Min(1, b / stats.WallSeconds) : 0).ToList();
    }

    private optim.Optimizer MakeOptimizer(IEnumerable<Parameter> parameters) =>
        LanguageModelOptimizer.Create(parameters, Options.LearningRate, Options.WeightDecay);

    /// <inheritdoc />
    public void Dispose()
    {
        Pipeline.Dispose();
    }
}

namespace PipeSharp.Training;

/// <summary>How a <see cref="LanguageModelTrainer"/> trains.</summary>
public sealed record LanguageModelTrainingOptions
{
    /// <summary>Optimizer steps in the whole run.</summary>
    public int Steps { get; init; } = 1000;

    /// <summary>Sequences per batch (split into the pipeline's micro-batches).</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Peak learning rate (AdamW).</summary>
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>Learning rate at the end of the cosine decay.</summary>
    public double MinLearningRate { get; init; } = 1e-4;

    /// <summary>Steps of linear warm-up.</summary>
    public int WarmupSteps { get; init; } = 100;

    /// <summary>AdamW weight decay, applied to matrices and embeddings only (not to biases and norms), as nanoGPT does.</summary>
    public double WeightDecay { get; init; } = 0.1;

    /// <summary>Clip the global gradient norm (over all stages) to this; null for no clipping.</summary>
    public double? MaxGradNorm { get; init; } = 1.0;

    /// <summary>Measure the validation loss every this many steps (and at the end); 0 for only at the end.</summary>
    public int EvalEvery { get; init; } = 100;

    /// <summary>Batches per validation measurement.</summary>
    public int EvalBatches { get; init; } = 20;

    /// <summary>
    /// When the pipeline options give no balance: split the model by the measured forward + backward time of each layer
    /// on one micro-batch (each layer timed) instead of by parameter count. The same as
    /// <c>PipelineOptions.BalanceMode = BalanceMode.Time</c>; with either, or <c>BalanceMode.Auto</c>, the trainer measures
    /// on its first training batch.
    /// </summary>
    public bool BalanceByTime { get; init; }

    /// <summary>Seed of the initial weights and of the batches.</summary>
    public long Seed { get; init; }
}

namespace PipeSharp.Runtime;

/// <summary>What <see cref="Pipeline.Evaluate(TorchSharp.torch.Tensor, TorchSharp.torch.Tensor, Func{TorchSharp.torch.Tensor, TorchSharp.torch.Tensor, TorchSharp.torch.Tensor}?, CancellationToken)"/> measured on a batch.</summary>
/// <param name="Loss">The pipeline's loss of the whole batch (the mean over its samples), as <see cref="Pipeline.TrainStep(TorchSharp.torch.Tensor, TorchSharp.torch.Tensor, System.Threading.CancellationToken)"/> would report it.</param>
/// <param name="Metric">
/// The metric of the whole batch: each micro-batch's value weighted by its share of the samples and summed (so a
/// per-micro-batch mean, e.g. an accuracy, gives the batch's mean); null when no metric was given.
/// </param>
public readonly record struct EvaluationResult(float Loss, float? Metric);

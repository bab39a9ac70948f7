using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// The scoring part of an evaluation step: a forward-only step with targets, whose last stage computes each
/// micro-batch's weighted loss (and metric) instead of keeping its output, so that only these scalars cross ranks.
/// </summary>
internal sealed class StepEvaluation(Func<Tensor, Tensor, Tensor>? metric, int replicas)
{
    private readonly double[] _metric = new double[replicas];

    /// <summary>Number of values per replica that <see cref="Values"/> gives: the loss and the metric.</summary>
    public const int ValueCount = 2;

    /// <summary>True if a metric is measured besides the loss.</summary>
    public bool HasMetric => metric is not null;

    /// <summary>
    /// On the last stage (its worker thread, under no_grad): the loss and the metric of micro-batch
    /// <paramref name="microBatch"/> of <paramref name="replica"/>, weighted by its share of the batch, added to that
    /// replica's sums. Nothing of the output is kept.
    /// </summary>
    public void Score(int replica, ReplicaStep data, int microBatch, Tensor output, Device device, Func<Tensor, Tensor, Tensor> loss)
    {
        using var scope = torch.NewDisposeScope();
        var target = data.Targets![microBatch].to(device);
        double weight = data.LossWeights[microBatch];
        data.AddLoss(Scalar(loss(output, target), "loss") * weight);
        if (metric is null) return;
        double value = Scalar(metric(output, target), "metric") * weight;
        lock (_metric) _metric[replica] += value;
    }

    /// <summary>The loss and metric sums of <paramref name="replica"/>'s share of the batch.</summary>
    public double[] Values(int replica, ReplicaStep data)
    {
        lock (_metric) return [data.Loss, _metric[replica]];
    }

    private static double Scalar(Tensor value, string what)
    {
        if (value.numel() != 1)
            throw new ArgumentException(
                $"the {what} must give one value per micro-batch (e.g. a mean over its samples), but it gave shape [{string.Join(",", value.shape)}].", what);
        return value.to_type(ScalarType.Float32).item<float>();
    }
}

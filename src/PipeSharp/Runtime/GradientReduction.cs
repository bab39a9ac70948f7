using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>What the ranks agreed on after a step's actions.</summary>
/// <param name="Loss">The loss of the whole batch.</param>
/// <param name="GradientNorm">The global gradient norm before clipping (over every stage, each shared parameter once).</param>
/// <param name="Stop">The largest stop code any rank asked for (0: none).</param>
/// <param name="Skip">True if the loss or the norm is NaN or infinite: no optimizer step may be taken.</param>
/// <param name="ClipCoefficient">
/// What every gradient is scaled by before the optimizer step (<see cref="GradientReduction.Scale"/>): min(1, max / norm)
/// as <c>clip_grad_norm_</c> computes it; 1 without clipping.
/// </param>
internal readonly record struct ReducedGradients(double Loss, double GradientNorm, int Stop, bool Skip, double ClipCoefficient = 1);

/// <summary>
/// Turns the gradients each rank accumulated into the ones every optimizer steps with: summed over replicas and over
/// the copies of shared parameters, the global norm (the same on every rank), the clipping factor for
/// <see cref="PipelineOptions.MaxGradNorm"/>, and the check that the loss and the norm are finite, which every rank
/// and replica decides alike because both are global. With replicas in this process the workers sum the replicas'
/// gradients and measure their norms in one job, each its share of the parameters; the scaling is done by each
/// stage's worker right before its optimizer step (<see cref="Scale"/>), so a step makes two hand-offs to the workers
/// after its actions, not four.
/// </summary>
internal sealed class GradientReduction(StepRunner runner, ICollectives collectives, IReadOnlyList<ReplicaRuntime> replicas, int stageCount)
{
    private bool? _fuses;

    /// <summary>Reduces and measures the step's gradients, and works out the clipping factor; a collective part of the step.</summary>
    public ReducedGradients Reduce(StepContext step, double? maxGradNorm, int stopCode)
    {
        double loss = 0, norm = 0, coefficient = 1;
        int stop = 0;
        runner.Collective(step, () =>
        {
            bool fused = _fuses ??= Fuses();
            var squares = new double[stageCount, replicas.Count];
            // vector_norm converts its order to a Scalar implicitly: several workers need collections held off.
            if (collectives.ReducesOnWorkers)
                using (Native.CollectionPause.Enter(when: runner.WorkerCount > 1))
                    runner.RunOnWorkers(step, (replica, rank) => ReduceAndMeasure(replica, rank, fused, squares));
            collectives.ReduceGradients(step.Cancellation);
            (loss, stop) = collectives.TotalLoss(step, stopCode, step.Cancellation);
            if (!fused)
                using (Native.CollectionPause.Enter(when: runner.WorkerCount > 1))
                    runner.RunOnWorkers(step, (replica, rank) => StageSquares(replica, rank, squares));
            var perStage = new double[stageCount];
            for (int s = 0; s < stageCount; s++)
                for (int d = 0; d < replicas.Count; d++) perStage[s] += squares[s, d];
            norm = Math.Sqrt(collectives.SumOverStages(perStage, step.Cancellation));
            step.GradientNorm = maxGradNorm is null ? null : norm;
            if (maxGradNorm is { } maxNorm && double.IsFinite(norm) && double.IsFinite(loss)) coefficient = Math.Min(1, maxNorm / (norm + 1e-6));
        });
        return new ReducedGradients(loss, norm, stop, !double.IsFinite(norm) || !double.IsFinite(loss), coefficient);
    }

    // A worker's share of the replicas' sums, and (fused) the squared norms of the parameters it summed, per stage.
    private void ReduceAndMeasure(ReplicaRuntime replica, int rank, bool fused, double[,] squares)
    {
        using var scope = torch.NewDisposeScope();
        var parts = fused ? new Dictionary<int, List<Tensor>>() : null;
        collectives.ReduceOnWorker(replica, rank, parts is null ? null : (stage, p) =>
        {
            if (p.grad is { } g && !replica.Shared.IsSecondaryCopy(p))
                (parts.TryGetValue(stage.Module.Index, out var list) ? list : parts[stage.Module.Index] = new()).Add(Square(g));
        });
        if (parts is not null)
            foreach (var (s, list) in parts) squares[s, replica.Index] = torch.stack(list).sum().item<double>(); // one read-back per stage
    }

    // The norms can be measured in the job that sums the replicas when that job reduces every parameter the norm covers
    // (each stage's optimizer holds exactly the stage's distinct parameters, as the pipeline gives them) and no shared
    // copy must first be summed with another stage's (that happens on the main thread, after the job).
    private bool Fuses() =>
        collectives.ReducesOnWorkers
        && !replicas[0].Shared.Groups.Any(g => g.Owners.Count > 1)
        && replicas.All(r => r.Local.All(s => s.Optimizer.parameters().Count() == Native.ParameterIdentity.Distinct(s.Module.parameters()).Count));

    // The squared norms of one replica's stages of a rank, over its optimizers' parameters with a gradient (each shared
    // parameter once): by replica 0 only, since after the reduction every replica holds the same gradients.
    private void StageSquares(ReplicaRuntime replica, int rank, double[,] squares)
    {
        if (replica != replicas[0]) return;
        foreach (var s in replica.StagesOf(rank))
        {
            using var scope = torch.NewDisposeScope();
            var sums = s.Optimizer.parameters().Where(p => p.grad is not null && !replica.Shared.IsSecondaryCopy(p)).Select(p => Square(p.grad!)).ToArray();
            squares[s.Module.Index, 0] = sums.Length == 0 ? 0 : torch.stack(sums).sum().item<double>(); // one read-back per stage
        }
    }

    // A gradient's norm in float32 (one pass, no copy, as clip_grad_norm_ computes it on one device), squared in
    // float64; the squares are summed in float64. Summing the gradients' squares in float64 instead cost 1.7 ms per
    // step against 0.5 ms for the GPT of issue 11 (one thread, 52 tensors, 1.8M values).
    private static Tensor Square(Tensor gradient) => torch.linalg.vector_norm(gradient).to_type(ScalarType.Float64).square();

    /// <summary>
    /// Scales the gradients of <paramref name="stage"/>'s optimizer by the clipping factor, on its worker right before
    /// its optimizer step (as torch.nn.utils.clip_grad_norm_ on one device); nothing at 1.
    /// </summary>
    public static void Scale(StageRuntime stage, double coefficient)
    {
        if (coefficient >= 1) return;
        using var noGrad = torch.no_grad();
        using var factor = coefficient.ToScalar(); // not an implicit conversion: its finalizer could free it mid-call
        foreach (var p in stage.Optimizer.parameters())
            p.grad?.mul_(factor);
    }
}

using PipeSharp.Boundaries;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>A run of consecutive layers of a stage (indices within the stage), whose graph a forward keeps or recomputes.</summary>
internal sealed record StageSegment(int First, int Count, bool Recomputed);

/// <summary>
/// What a forward keeps of one segment of a stage that recomputes: the tensors the segment started from (the stage's
/// received leaves for the first segment, fresh leaves for later ones, so that each segment's graph ends at its own
/// leaves and a backward can walk the segments in reverse) and, for a kept segment, the tensors it ended with (its graph)
/// and its captured layer outputs (for a split backward); for a recomputed one, the generator state its forward started
/// from, so that a re-run draws the same random numbers.
/// </summary>
internal sealed record SavedSegment(StageSegment Segment, TensorSet Inputs, TensorSet? Outputs, IReadOnlyList<LayerOutput>? Layers, Tensor? RandomState)
{
    /// <summary>Every tensor this record holds (a tensor held under several names counted once).</summary>
    public IEnumerable<Tensor> Tensors()
    {
        var all = Inputs.Values.Concat(Outputs?.Values ?? []).Concat(Layers?.Select(l => l.Output) ?? []);
        if (RandomState is not null) all = all.Append(RandomState);
        return all.Distinct(ReferenceEqualityComparer.Instance).Cast<Tensor>();
    }
}

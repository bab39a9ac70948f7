namespace PipeSharp.Memory;

/// <summary>
/// What the memory model knows about one stage, measured or counted before training (bytes; "per micro-batch" means
/// for one micro-batch of the schedule's size).
/// </summary>
/// <param name="Stage">The stage number.</param>
/// <param name="Layers">The stage's layer count (for re-cutting the model when the model tries more stages).</param>
/// <param name="ParameterBytes">Its parameters, counting its own copies of parameters shared with other stages.</param>
/// <param name="SharedCopyBytes">Of <paramref name="ParameterBytes"/>, the copies of parameters an earlier stage holds too.</param>
/// <param name="KeptBytesPerMicroBatch">
/// What one micro-batch's forward keeps until its backward: the graph's saved tensors and the outputs sent. This is
/// the input for "what a stage keeps per micro-batch": with activation recomputation it is only what the stage keeps
/// (e.g. its input), and <paramref name="RecomputedBytesPerMicroBatch"/> what a backward makes again.
/// </param>
/// <param name="InputBytesPerMicroBatch">The boundary tensors it receives per micro-batch (held in buffers of its own across processes).</param>
/// <param name="OutputBytesPerMicroBatch">The boundary tensors it sends per micro-batch.</param>
/// <param name="RecomputedBytesPerMicroBatch">
/// Bytes a backward holds for a moment beyond what is kept: 0 without recomputation; with it, the activations of
/// the one micro-batch whose forward is run again.
/// </param>
/// <param name="ForwardPeakBytesPerMicroBatch">
/// What a forward holds at its end before its temporaries are freed (at least <paramref name="KeptBytesPerMicroBatch"/>); 0: as kept.
/// </param>
/// <param name="SplitBackwardBytesPerMicroBatch">
/// Split backward (I, then W): what an I leaves for its W beyond the kept graph, the gradient of each captured layer
/// output.
/// </param>
internal sealed record StageMemoryInputs(
    int Stage,
    int Layers,
    long ParameterBytes,
    long SharedCopyBytes,
    long KeptBytesPerMicroBatch,
    long InputBytesPerMicroBatch,
    long OutputBytesPerMicroBatch,
    long RecomputedBytesPerMicroBatch = 0,
    long SplitBackwardBytesPerMicroBatch = 0,
    long ForwardPeakBytesPerMicroBatch = 0);

/// <summary>Everything the memory model takes, apart from the schedule.</summary>
/// <param name="Stages">Per stage, in model order.</param>
/// <param name="OptimizerStateFactor">Optimizer state per parameter byte (AdamW: 2).</param>
/// <param name="OptimizerStateSource">How that factor was found, for messages (e.g. "AdamW: 2 x parameters").</param>
/// <param name="ReceivesIntoOwnBuffers">
/// True when ranks are processes: a received tensor is a copy in the receiver's memory. In one process it is the
/// sender's tensor.
/// </param>
/// <param name="GradientsKeptBetweenSteps">True if parameter gradients stay allocated between steps (zeroed, not freed).</param>
internal sealed record MemoryModelInputs(
    IReadOnlyList<StageMemoryInputs> Stages,
    double OptimizerStateFactor,
    string OptimizerStateSource,
    bool ReceivesIntoOwnBuffers,
    bool GradientsKeptBetweenSteps);

using System.Text.Json;
using System.Text.Json.Nodes;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Checkpoints;

/// <summary>
/// A checkpoint read by <see cref="CheckpointStore.Load"/>, every file verified: its manifest, the model's tensors by
/// name and each parameter's optimizer state. Apply it to a pipeline of any split of the same model.
/// </summary>
public sealed class LoadedCheckpoint : IDisposable
{
    private readonly Dictionary<string, Tensor> _tensors;

    internal LoadedCheckpoint(string path, CheckpointManifest manifest, Dictionary<string, Tensor> tensors, Dictionary<string, byte[]> optimizerState)
    {
        Path = path;
        Manifest = manifest;
        _tensors = tensors;
        OptimizerState = optimizerState;
    }

    /// <summary>The checkpoint's folder.</summary>
    public string Path { get; }

    /// <summary>The manifest: model, tokenizer, split, step, data position, RNG and trainer state.</summary>
    public CheckpointManifest Manifest { get; }

    /// <summary>The model's parameters and buffers by model name, on the CPU (as <see cref="PipelineState.StateDict"/> gives them).</summary>
    public IReadOnlyDictionary<string, Tensor> ModelState => _tensors;

    /// <summary>Each parameter's optimizer state by model name (as <see cref="PipelineState.OptimizerState"/> gives it).</summary>
    public IReadOnlyDictionary<string, byte[]> OptimizerState { get; }

    /// <summary>
    /// Throws <see cref="CheckpointMismatchException"/> unless the checkpoint is of <paramref name="modelKind"/> with
    /// exactly <paramref name="modelConfig"/> (compared as JSON values).
    /// </summary>
    public void CheckModel(string modelKind, JsonElement modelConfig)
    {
        if (!string.Equals(Manifest.ModelKind, modelKind, StringComparison.Ordinal))
            throw new CheckpointMismatchException(
                $"checkpoint {Path} is of a {Manifest.ModelKind} model, but this run trains a {modelKind} model.");
        var saved = JsonNode.Parse(Manifest.ModelConfig.GetRawText());
        var current = JsonNode.Parse(modelConfig.GetRawText());
        if (JsonNode.DeepEquals(saved, current)) return;
        string differences = saved is JsonObject a && current is JsonObject b
            ? " (differs in " + string.Join(", ", a.Select(p => p.Key).Union(b.Select(p => p.Key))
                .Where(k => !JsonNode.DeepEquals(a[k], b[k]))
                .Select(k => $"{k}: {a[k]?.ToJsonString() ?? "absent"} in the checkpoint, {b[k]?.ToJsonString() ?? "absent"} here")) + ")"
            : "";
        throw new CheckpointMismatchException(
            $"checkpoint {Path} is for model config {saved?.ToJsonString()}, but this run uses {current?.ToJsonString()}{differences}. " +
            "Resume with the checkpoint's model settings, or use another checkpoint folder.");
    }

    /// <summary>
    /// Checks the model (<see cref="CheckModel"/>), then loads the parameters and optimizer state into
    /// <paramref name="pipe"/> (any number of stages or balance) and, if <paramref name="restoreRngState"/>, the global
    /// torch RNG state. Everything is checked before anything changes.
    /// </summary>
    /// <exception cref="CheckpointMismatchException">The checkpoint is of another model kind or config.</exception>
    /// <exception cref="ArgumentException">The tensors or optimizer state do not fit the pipeline.</exception>
    public void ApplyTo(Pipeline pipe, string modelKind, JsonElement modelConfig, bool restoreRngState = true)
    {
        CheckModel(modelKind, modelConfig);
        ApplyTo(pipe, restoreRngState);
    }

    /// <summary>
    /// Loads the parameters and optimizer state into <paramref name="pipe"/> without comparing model configs (shapes
    /// and names are still checked first), and, if <paramref name="restoreRngState"/>, the global torch RNG state.
    /// </summary>
    /// <exception cref="ArgumentException">The tensors or optimizer state do not fit the pipeline; nothing changed.</exception>
    public void ApplyTo(Pipeline pipe, bool restoreRngState = true)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        ObjectDisposedException.ThrowIf(_disposed, this);
        pipe.CheckStateDict(_tensors);
        pipe.LoadOptimizerState(OptimizerState); // checked and all-or-nothing by itself
        pipe.LoadStateDict(_tensors);
        if (restoreRngState && Manifest.RngState is { } rng)
        {
            using var state = tensor(rng);
            set_rng_state(state);
        }
    }

    private bool _disposed;

    /// <summary>Disposes the tensors.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _tensors.Values) t.Dispose();
    }
}

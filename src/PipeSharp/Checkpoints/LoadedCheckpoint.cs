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
    private readonly Func<string?, string, Exception?, CheckpointCorruptException> _corrupt;
    private (Dictionary<string, Tensor> Tensors, Dictionary<string, byte[]> Optimizer)? _whole;

    // The files were checked by CheckpointStore.LoadStep; they are read when needed, each checked again as it is read.
    internal LoadedCheckpoint(string path, CheckpointManifest manifest, Func<string?, string, Exception?, CheckpointCorruptException> corrupt)
    {
        Path = path;
        Manifest = manifest;
        _corrupt = corrupt;
    }

    // Every file, read on first use (the whole model: for export and generation, not for resuming).
    private (Dictionary<string, Tensor> Tensors, Dictionary<string, byte[]> Optimizer) Whole()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_whole is null) _filesRead.AddRange(Manifest.Files.Select(f => f.Name));
        return _whole ??= LayerFiles.Read(Path, Manifest.Files, _corrupt);
    }

    private readonly List<string> _filesRead = new();

    /// <summary>The files whose tensors have been read so far (for tests: a rank reads only its own layers').</summary>
    internal IReadOnlyList<string> FilesRead => _filesRead;

    /// <summary>The checkpoint's folder.</summary>
    public string Path { get; }

    /// <summary>The manifest: model, tokenizer, split, step, data position, RNG and trainer state.</summary>
    public CheckpointManifest Manifest { get; }

    /// <summary>
    /// The whole model's parameters and buffers by model name, on the CPU (as <see cref="PipelineState.StateDict"/> gives
    /// them), read from every file on first use. To resume a pipeline use <see cref="ApplyTo(Pipeline, bool)"/>, which
    /// reads only the files of the layers the pipeline holds in this process.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> ModelState => Whole().Tensors;

    /// <summary>Each parameter's optimizer state by model name (as <see cref="PipelineState.OptimizerState"/> gives it), read from every file on first use.</summary>
    public IReadOnlyDictionary<string, byte[]> OptimizerState => Whole().Optimizer;

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
    /// and names are still checked first), and, if <paramref name="restoreRngState"/>, the global torch RNG state. Only
    /// the files of the layers this process holds are read (of a checkpoint of format 2, one file per layer), so with
    /// one rank per process no process holds the whole model. The pipeline's <see cref="Pipeline.TrainingSteps"/> becomes
    /// the manifest's <see cref="CheckpointManifest.Step"/>, so keyed dropout draws the masks an uninterrupted run would.
    /// </summary>
    /// <exception cref="ArgumentException">The tensors or optimizer state do not fit the pipeline; nothing changed.</exception>
    public void ApplyTo(Pipeline pipe, bool restoreRngState = true)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Manifest.Step < 0)
            throw new ArgumentException($"the checkpoint's manifest gives step {Manifest.Step}, and a step count cannot be negative: " +
                                        "it was edited or not written by PipeSharp; nothing was loaded.", nameof(pipe));
        var local = LayerFiles.Local(pipe);
        bool perLayer = Manifest.Files.All(f => LayerFiles.LayerOf(f.Name) is not null);
        var (tensors, optimizer) = _whole is { } whole || !perLayer
            ? Whole()
            : ReadLocal(local);
        try
        {
            pipe.CheckStateDict(tensors);
            pipe.LoadOptimizerState(optimizer); // checked and all-or-nothing by itself
            pipe.LoadStateDict(tensors);
            pipe.TrainingSteps = Manifest.Step; // the steps the checkpoint was written after: the next step's dropout key
        }
        finally
        {
            if (_whole is null || !ReferenceEquals(tensors, _whole.Value.Tensors))
                foreach (var t in tensors.Values) t.Dispose();
        }
        if (restoreRngState && Manifest.RngState is { } rng)
        {
            using var state = tensor(rng);
            set_rng_state(state);
        }
    }

    private (Dictionary<string, Tensor>, Dictionary<string, byte[]>) ReadLocal(HashSet<int> layers)
    {
        var files = Manifest.Files.Where(f => layers.Contains(LayerFiles.LayerOf(f.Name)!.Value)).ToList();
        _filesRead.AddRange(files.Select(f => f.Name));
        return LayerFiles.Read(Path, files, _corrupt);
    }

    private bool _disposed;

    /// <summary>Disposes the tensors.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_whole is { } whole)
            foreach (var t in whole.Tensors.Values) t.Dispose();
    }
}

using System.Text.Json;
using System.Text.Json.Serialization;

namespace PipeSharp.Checkpoints;

/// <summary>
/// What a checkpoint holds besides the tensors: the model and tokenizer it belongs to, how it was split, where training
/// was, and the name, length and SHA-256 of every file. Stored as <c>manifest.json</c> in the checkpoint's folder.
/// </summary>
/// <remarks>
/// The caller fills the model, tokenizer, step, data position and trainer state; <see cref="CheckpointStore.Save(string, CheckpointManifest, Runtime.Pipeline, int)"/>
/// fills the split (<see cref="Balance"/>, <see cref="Ranks"/>, <see cref="StagesPerRank"/>), <see cref="RngState"/>,
/// <see cref="Files"/> and <see cref="SavedAt"/>. The JSON fields are opaque to PipeSharp: it compares
/// <see cref="ModelConfig"/> with the resuming run's and hands the rest back.
/// </remarks>
public sealed record CheckpointManifest
{
    /// <summary>The version of the checkpoint layout this manifest describes.</summary>
    public const int CurrentFormatVersion = 2; // 2: one file per layer; 1: one file per stage

    /// <summary>The version of the layout; a checkpoint of a newer version is refused.</summary>
    public int FormatVersion { get; init; } = CurrentFormatVersion;

    /// <summary>What kind of model this is (e.g. <c>gpt</c>).</summary>
    public string ModelKind { get; init; } = "";

    /// <summary>The model's configuration (e.g. a serialised <see cref="Models.GptConfig"/>).</summary>
    public JsonElement ModelConfig { get; init; }

    /// <summary>How text becomes tokens (opaque to PipeSharp), or null.</summary>
    public JsonElement? Tokenizer { get; init; }

    /// <summary>Layers per stage when saved (ranks x stages-per-rank entries).</summary>
    public IReadOnlyList<int> Balance { get; init; } = Array.Empty<int>();

    /// <summary>Pipeline ranks per replica when saved (JSON field <c>stages</c>, its name before ranks and stages were told apart).</summary>
    [JsonPropertyName("stages")]
    public int Ranks { get; init; }

    /// <summary>Stages per rank when saved (JSON field <c>chunks</c>).</summary>
    [JsonPropertyName("chunks")]
    public int StagesPerRank { get; init; } = 1;

    /// <summary>Optimizer steps taken when saved.</summary>
    public long Step { get; init; }

    /// <summary>Where the data stream was (opaque to PipeSharp), or null.</summary>
    public JsonElement? DataPosition { get; init; }

    /// <summary>The global torch random number generator's state (<c>torch.get_rng_state()</c>); base64 in the JSON.</summary>
    public byte[]? RngState { get; init; }

    /// <summary>Anything else the trainer needs to continue (e.g. the best validation loss), or null.</summary>
    public JsonElement? TrainerState { get; init; }

    /// <summary>The checkpoint's files (besides the manifest), with their lengths and checksums.</summary>
    public IReadOnlyList<CheckpointFile> Files { get; init; } = Array.Empty<CheckpointFile>();

    /// <summary>When the checkpoint was written.</summary>
    public DateTimeOffset SavedAt { get; init; }

    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Serialises <paramref name="value"/> (e.g. a model config record) for <see cref="ModelConfig"/> and the other JSON fields.</summary>
    public static JsonElement ToJson<T>(T value) => JsonSerializer.SerializeToElement(value);
}

/// <summary>One file of a checkpoint.</summary>
/// <param name="Name">The file's name inside the checkpoint folder.</param>
/// <param name="Length">Its length in bytes.</param>
/// <param name="Sha256">The SHA-256 of its bytes, lowercase hex.</param>
public sealed record CheckpointFile(string Name, long Length, string Sha256);

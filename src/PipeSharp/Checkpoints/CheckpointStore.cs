using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Checkpoints;

/// <summary>
/// Saves and loads training checkpoints in a folder: one sub-folder per checkpoint, <c>step-000123/</c>, holding one
/// safetensors file per layer, <c>layer-N.safetensors</c> (its parameters and buffers under their model names, plus each
/// parameter's optimizer state as a byte tensor named <c>optimizer/NAME</c>), then <c>manifest.json</c> and its SHA-256
/// in <c>manifest.json.sha256</c>. Each rank writes the files of its own layers and, resuming with any layout, reads
/// only those of the layers it then holds: no process holds the whole model.
/// </summary>
/// <remarks>
/// <para>A checkpoint is written into a new hidden folder (<c>.tmp-step-000123-…</c>), every file flushed to disk, the
/// manifest last, and only then renamed to <c>step-000123</c> (a rename is atomic on one file system). A crash at any
/// point leaves the folder's previous checkpoints complete; loading ignores unfinished folders, and the next save
/// removes them. Older checkpoints are pruned only after the new one is in place.</para>
/// <para>Loading checks every file's length and SHA-256 against the manifest before any of it is used. Parameters and
/// optimizer state are stored per layer by model name, so a checkpoint loads into a pipeline with another number of stages,
/// ranks or another balance. Checkpoints of format 1 (one file per stage) still load; their files are read whole.</para>
/// </remarks>
public static partial class CheckpointStore
{
    /// <summary>The manifest's file name in a checkpoint folder.</summary>
    public const string ManifestName = "manifest.json";

    /// <summary>The file that holds the manifest's SHA-256 (as <c>sha256sum</c> prints it).</summary>
    public const string ManifestChecksumName = "manifest.json.sha256";

    /// <summary>How many checkpoints <see cref="Save(string, CheckpointManifest, Pipeline, int)"/> keeps by default.</summary>
    public const int DefaultKeep = 2;

    internal const string OptimizerPrefix = "optimizer/";
    private const string TempPrefix = ".tmp-";
    private const string OldPrefix = ".old-";
    private static readonly Regex StepFolder = new(@"^step-(\d{1,18})$", RegexOptions.CultureInvariant);

    /// <summary>The folder name of the checkpoint of <paramref name="step"/>: <c>step-000123</c>.</summary>
    public static string FolderName(long step) => $"step-{step.ToString("D6", CultureInfo.InvariantCulture)}";

    /// <summary>
    /// Saves the pipeline's parameters, optimizer state and the global RNG state with <paramref name="manifest"/> as
    /// the checkpoint of <c>manifest.Step</c> in <paramref name="directory"/> (created if needed), replacing an
    /// existing checkpoint of that step; then deletes all but the newest <paramref name="keep"/> checkpoints.
    /// </summary>
    /// <param name="directory">The checkpoint folder (e.g. <c>train --checkpoint DIR</c>).</param>
    /// <param name="manifest">The caller's part: model kind and config, tokenizer, step, data position, trainer state.</param>
    /// <param name="pipe">The pipeline; call between steps.</param>
    /// <param name="keep">Checkpoints to keep, at least 1 (the one just saved always stays).</param>
    /// <returns>The manifest as written, with the split, RNG state and files filled in.</returns>
    public static CheckpointManifest Save(string directory, CheckpointManifest manifest, Pipeline pipe, int keep = DefaultKeep) =>
        Save(directory, manifest, pipe, keep, beforeManifest: null);

    // beforeManifest runs after the stage files are written and before the manifest: tests use it to simulate a crash.
    internal static CheckpointManifest Save(string directory, CheckpointManifest manifest, Pipeline pipe, int keep, Action<string>? beforeManifest)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(pipe);
        if (keep < 1) throw new ArgumentOutOfRangeException(nameof(keep), keep, "keep at least one checkpoint.");
        if (string.IsNullOrEmpty(manifest.ModelKind) || manifest.ModelConfig.ValueKind == JsonValueKind.Undefined)
            throw new ArgumentException("the manifest needs the model kind and config, so that a resuming run can check them.", nameof(manifest));
        if (manifest.Step < 0) throw new ArgumentOutOfRangeException(nameof(manifest), manifest.Step, "the step must not be negative.");

        if (pipe.Backend.ProcessCount > 1) return SaveAcrossProcesses(directory, manifest, pipe, keep, pipe.Backend, beforeManifest);

        Directory.CreateDirectory(directory);
        string name = FolderName(manifest.Step);
        string temp = Path.Combine(directory, $"{TempPrefix}{name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        try
        {
            var files = pipe.Stages.SelectMany(s => LayerFiles.Write(temp, pipe, s.Index)).OrderBy(f => f.Layer).Select(f => f.File).ToList();
            beforeManifest?.Invoke(temp);
            manifest = Publish(directory, temp, manifest, files, pipe);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
        Prune(directory, keep, manifest.Step);
        return manifest;
    }

    // Writes the manifest (last, after every file) and renames the folder into place.
    private static CheckpointManifest Publish(string directory, string temp, CheckpointManifest manifest, List<CheckpointFile> files, Pipeline pipe)
    {
        using var rng = get_rng_state();
        manifest = manifest with
        {
            FormatVersion = CheckpointManifest.CurrentFormatVersion,
            Balance = pipe.Balance.ToArray(),
            Ranks = pipe.Schedule.RankCount,
            StagesPerRank = pipe.Schedule.StageCount / pipe.Schedule.RankCount,
            RngState = rng.bytes.ToArray(),
            Files = files,
            SavedAt = DateTimeOffset.UtcNow,
        };
        var json = JsonSerializer.SerializeToUtf8Bytes(manifest, CheckpointManifest.Json);
        WriteDurably(Path.Combine(temp, ManifestName), json);
        WriteDurably(Path.Combine(temp, ManifestChecksumName), Encoding.ASCII.GetBytes($"{Sha256(json)}  {ManifestName}\n"));

        string final = Path.Combine(directory, FolderName(manifest.Step));
        if (Directory.Exists(final))
        {
            string old = Path.Combine(directory, $"{OldPrefix}{FolderName(manifest.Step)}-{Guid.NewGuid():N}");
            Directory.Move(final, old);
            Directory.Move(temp, final);
            TryDelete(old);
        }
        else
        {
            Directory.Move(temp, final);
        }
        return manifest;
    }

    /// <summary>The steps of the complete checkpoints in <paramref name="directory"/>, oldest first (none if it does not exist).</summary>
    public static IReadOnlyList<long> Steps(string directory) => Complete(directory).Select(c => c.Step).ToList();

    /// <summary>
    /// Loads the newest complete checkpoint in <paramref name="directory"/>, after checking every file's length and SHA-256.
    /// Apply it with <see cref="LoadedCheckpoint.ApplyTo(Pipeline, string, JsonElement, bool)"/>.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">The folder holds no complete checkpoint.</exception>
    /// <exception cref="CheckpointCorruptException">The newest checkpoint is damaged; the message lists older ones.</exception>
    /// <exception cref="CheckpointMismatchException">The checkpoint is of a newer format.</exception>
    public static LoadedCheckpoint Load(string directory)
    {
        var all = Existing(directory);
        return all.Count > 0
            ? LoadStep(directory, all[^1].Step)
            : throw new FileNotFoundException(
                $"{directory} holds no checkpoint (a step-N folder with a {ManifestName}); start without --resume, or point to another folder.");
    }

    /// <summary>Loads the checkpoint of <paramref name="step"/> in <paramref name="directory"/>; see <see cref="Load"/>.</summary>
    public static LoadedCheckpoint LoadStep(string directory, long step)
    {
        var all = Existing(directory);
        var found = all.FirstOrDefault(c => c.Step == step);
        if (found.Path is null)
            throw new FileNotFoundException(
                $"{directory} has no checkpoint of step {step}" +
                (all.Count > 0 ? $"; it has steps {string.Join(", ", all.Select(c => c.Step))}." : "; it has none."));
        var others = all.Where(c => c.Step != step).Select(c => c.Step).Reverse().ToList();
        string path = found.Path;
        CheckpointCorruptException Corrupt(string? file, string problem, Exception? inner = null) =>
            new($"checkpoint {path} is unusable: {problem}. Nothing was loaded. " +
                (others.Count > 0
                    ? $"Older checkpoints in {directory} may still load with CheckpointStore.LoadStep(directory, step): steps {string.Join(", ", others)}."
                    : $"There is no other checkpoint in {directory}."),
                path, file, others, inner);

        var manifest = ReadManifest(path, Corrupt);
        // Every file checked now, one at a time (hashed as it streams, nothing kept); the tensors are read later, and
        // only those of the layers a pipeline holds (LoadedCheckpoint.ApplyTo), each file checked again as it is read.
        foreach (var file in manifest.Files)
        {
            if (file.Name.Length == 0 || file.Name != Path.GetFileName(file.Name) || file.Name is "." or ".." or ManifestName or ManifestChecksumName)
                throw Corrupt(file.Name, $"the manifest lists a file named '{file.Name}', which is not a file of the checkpoint");
            string full = Path.Combine(path, file.Name);
            if (!File.Exists(full)) throw Corrupt(file.Name, $"{file.Name} is missing");
            long length = new FileInfo(full).Length;
            if (length != file.Length)
                throw Corrupt(file.Name, $"{file.Name} has {length} bytes but the manifest says {file.Length} (expected SHA-256 {file.Sha256})");
            string actual;
            using (var stream = File.OpenRead(full)) actual = Convert.ToHexStringLower(SHA256.HashData(stream));
            if (!string.Equals(actual, file.Sha256, StringComparison.OrdinalIgnoreCase))
                throw Corrupt(file.Name, $"{file.Name} has SHA-256 {actual} but the manifest says {file.Sha256}");
        }
        return new LoadedCheckpoint(path, manifest, (file, problem, inner) => Corrupt(file, problem, inner));
    }

    private static CheckpointManifest ReadManifest(string path, Func<string?, string, Exception?, CheckpointCorruptException> corrupt)
    {
        string manifestPath = Path.Combine(path, ManifestName);
        string checksumPath = Path.Combine(path, ManifestChecksumName);
        var json = File.ReadAllBytes(manifestPath);
        if (!File.Exists(checksumPath)) throw corrupt(ManifestChecksumName, $"{ManifestChecksumName} is missing", null);
        string expected = File.ReadAllText(checksumPath).Split(' ', 2)[0].Trim();
        string actual = Sha256(json);
        if (!string.Equals(expected, actual, StringComparison.OrdinalIgnoreCase))
            throw corrupt(ManifestName, $"{ManifestName} has SHA-256 {actual} but {ManifestChecksumName} says {expected}", null);
        CheckpointManifest? manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<CheckpointManifest>(json, CheckpointManifest.Json);
        }
        catch (JsonException e)
        {
            throw corrupt(ManifestName, $"{ManifestName} cannot be read ({e.Message})", e);
        }
        if (manifest is null) throw corrupt(ManifestName, $"{ManifestName} is empty", null);
        if (manifest.FormatVersion > CheckpointManifest.CurrentFormatVersion)
            throw new CheckpointMismatchException(
                $"checkpoint {path} has format version {manifest.FormatVersion}, but this PipeSharp reads up to version " +
                $"{CheckpointManifest.CurrentFormatVersion}: load it with a newer PipeSharp.");
        return manifest;
    }

    private static void WriteDurably(string path, byte[] bytes)
    {
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        stream.Write(bytes);
        stream.Flush(flushToDisk: true);
    }

    // Complete checkpoints (a step-N folder with a manifest), oldest first. Unfinished or replaced folders are skipped.
    private static List<(long Step, string Path)> Complete(string directory)
    {
        if (!Directory.Exists(directory)) return new();
        return Directory.EnumerateDirectories(directory)
            .Select(d => (Match: StepFolder.Match(Path.GetFileName(d)), Path: d))
            .Where(x => x.Match.Success && File.Exists(Path.Combine(x.Path, ManifestName)))
            .Select(x => (Step: long.Parse(x.Match.Groups[1].Value, CultureInfo.InvariantCulture), x.Path))
            .OrderBy(x => x.Step)
            .ToList();
    }

    private static List<(long Step, string Path)> Existing(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"the checkpoint folder {directory} does not exist.");
        return Complete(directory);
    }

    private static void Prune(string directory, int keep, long justSaved)
    {
        var complete = Complete(directory);
        foreach (var (step, path) in complete.Take(Math.Max(0, complete.Count - keep)))
        {
            if (step == justSaved) continue;
            // Renamed away first, so that a crash while deleting never leaves a half-deleted step-N folder.
            string old = Path.Combine(directory, $"{OldPrefix}{Path.GetFileName(path)}-{Guid.NewGuid():N}");
            try
            {
                Directory.Move(path, old);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }
            TryDelete(old);
        }
        foreach (var leftover in Directory.EnumerateDirectories(directory)
                     .Where(d => Path.GetFileName(d) is { } n && (n.StartsWith(TempPrefix, StringComparison.Ordinal) || n.StartsWith(OldPrefix, StringComparison.Ordinal))))
            TryDelete(leftover);
    }

    private static void TryDelete(string folder)
    {
        try
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Left for the next save to remove; it is ignored by loading.
        }
    }

    internal static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));
}

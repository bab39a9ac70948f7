using System.Text.Json;
using PipeSharp.Runtime;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace PipeSharp.Checkpoints;

/// <summary>
/// Writes a trained model as one file that PyTorch loads, with its config as <c>config.json</c> beside it:
/// safetensors (<c>.safetensors</c>; <c>safetensors.torch.load_file</c>) or a pickled PyTorch state dict
/// (<c>.pt</c>, <c>.pth</c>, <c>.bin</c>; <c>torch.load</c>, written by TorchSharp.PyBridge). Tensors keep their
/// model names; a tied parameter is written under each of its names.
/// </summary>
public static class ModelExport
{
    /// <summary>The config file's name, next to the model file.</summary>
    public const string ConfigName = "config.json";

    /// <summary>Writes the merged model of <paramref name="pipe"/> (all stages) to <paramref name="path"/>.</summary>
    /// <param name="pipe">The pipeline; call between steps.</param>
    /// <param name="path">The model file; its extension picks the format.</param>
    /// <param name="config">The model config, serialised to <c>config.json</c> (a <see cref="JsonElement"/> is written as it is).</param>
    public static void Save(Pipeline pipe, string path, object config)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        var state = pipe.StateDict();
        try
        {
            Save(state, path, config);
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    /// <summary>Writes <paramref name="state"/> (e.g. <see cref="LoadedCheckpoint.ModelState"/>) to <paramref name="path"/>.</summary>
    /// <exception cref="ArgumentException">The extension is none of the supported ones.</exception>
    /// <exception cref="IOException">The model file or its config cannot be written; the message names that file.</exception>
    public static void Save(IReadOnlyDictionary<string, Tensor> state, string path, object config)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(config);
        string extension = Path.GetExtension(path).ToLowerInvariant();
        Action<Stream> write = extension switch
        {
            ".safetensors" => s => SafetensorsFormat.Write(s, state),
            ".pt" or ".pth" or ".bin" => s => PyTorchPickler.PickleStateDict(s, state.ToDictionary(kv => kv.Key, kv => kv.Value), leaveOpen: true),
            _ => throw new ArgumentException(
                $"cannot tell the format of '{path}': name it .safetensors (safetensors) or .pt/.pth/.bin (PyTorch state dict).", nameof(path)),
        };
        string folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(folder);
        WriteReplacing(path, write);
        WriteReplacing(Path.Combine(folder, ConfigName),
            s => JsonSerializer.Serialize(s, config, config.GetType(), new JsonSerializerOptions { WriteIndented = true }));
    }

    // Writes a new file next to the target, flushed to disk, then renames it over the target (atomic on one file system).
    private static void WriteReplacing(string path, Action<Stream> write)
    {
        string temp = $"{path}.tmp-{Guid.NewGuid():N}";
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The error names the temporary file: say which file could not be written.
            throw new IOException($"cannot write {path}: {e.Message.Replace(temp, path)}", e);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }
}

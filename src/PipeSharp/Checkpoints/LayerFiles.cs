using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Checkpoints;

/// <summary>
/// The files of a checkpoint, one per layer (format 2): <c>layer-N.safetensors</c> holds layer N's parameters and
/// buffers under their model names and each of its parameters' optimizer state (<c>optimizer/NAME</c>), so that a rank
/// of any layout reads exactly the files of its own layers. Format 1 had one file per stage (<c>stage-N.safetensors</c>);
/// those are read whole.
/// </summary>
internal static partial class LayerFiles
{
    [GeneratedRegex(@"^layer-(\d{1,9})\.safetensors$", RegexOptions.CultureInvariant)]
    private static partial Regex LayerFile();

    /// <summary>The file name of layer <paramref name="layer"/>.</summary>
    public static string Name(int layer) => $"layer-{layer.ToString(CultureInfo.InvariantCulture)}.safetensors";

    /// <summary>The layer a file holds, or null for a file of another kind (a format-1 stage file).</summary>
    public static int? LayerOf(string fileName) =>
        LayerFile().Match(fileName) is { Success: true } m ? int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : null;

    /// <summary>The model's layers held by this process (those of its first local replica), by index.</summary>
    public static HashSet<int> Local(Pipeline pipe) =>
        pipe.LocalStages.SelectMany(s => Enumerable.Range(s.Module.FirstLayer, s.Module.LayerCount)).ToHashSet();

    /// <summary>
    /// Writes one file per layer of stage <paramref name="stage"/> into <paramref name="folder"/>, flushed to disk: the
    /// layer's tensors and its parameters' optimizer state (the whole-optimizer entry of an optimizer without state per
    /// parameter goes with the stage's first layer).
    /// </summary>
    public static List<(int Layer, CheckpointFile File)> Write(string folder, Pipeline pipe, int stage)
    {
        var module = pipe.Replicas[0].Stages[stage]!.Module;
        var layerNames = module.named_children().Select(c => c.name).ToList();
        int LayerIndex(string name)
        {
            int dot = name.IndexOf('.');
            int k = layerNames.IndexOf(dot < 0 ? name : name[..dot]);
            return k < 0 ? 0 : k; // not a layer's: kept with the stage's first layer
        }
        var tensors = pipe.StageStateDict(stage);
        var optimizer = pipe.StageOptimizerState(stage);
        var written = new List<(int, CheckpointFile)>();
        try
        {
            for (int k = 0; k < layerNames.Count; k++)
            {
                int layer = module.FirstLayer + k;
                var own = tensors.Where(t => LayerIndex(t.Key) == k).ToDictionary(t => t.Key, t => t.Value);
                var blobs = new List<Tensor>();
                foreach (var (param, blob) in optimizer.Where(o => LayerIndex(o.Key) == k))
                {
                    var t = tensor(blob);
                    blobs.Add(t);
                    own[CheckpointStore.OptimizerPrefix + param] = t;
                }
                try
                {
                    written.Add((layer, WriteFile(Path.Combine(folder, Name(layer)), own, layer, pipe.Balance.Sum())));
                }
                finally
                {
                    foreach (var t in blobs) t.Dispose();
                }
            }
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
        return written;
    }

    private static CheckpointFile WriteFile(string path, Dictionary<string, Tensor> tensors, int layer, int layers)
    {
        using (var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            SafetensorsFormat.Write(stream, tensors, new Dictionary<string, string>
            {
                ["pipesharp_layer"] = layer.ToString(CultureInfo.InvariantCulture),
                ["pipesharp_layers"] = layers.ToString(CultureInfo.InvariantCulture),
            });
            stream.Flush(flushToDisk: true);
        }
        using var read = File.OpenRead(path);
        return new CheckpointFile(Path.GetFileName(path), read.Length, Convert.ToHexStringLower(SHA256.HashData(read)));
    }

    /// <summary>
    /// Reads <paramref name="files"/> of the checkpoint in <paramref name="folder"/>, each checked against its length and
    /// SHA-256 before use: the tensors by model name and the optimizer state by parameter name.
    /// </summary>
    public static (Dictionary<string, Tensor> Tensors, Dictionary<string, byte[]> Optimizer) Read(
        string folder, IEnumerable<CheckpointFile> files, Func<string?, string, Exception?, CheckpointCorruptException> corrupt)
    {
        var tensors = new Dictionary<string, Tensor>();
        var optimizer = new Dictionary<string, byte[]>();
        try
        {
            foreach (var file in files)
            {
                var bytes = File.Exists(Path.Combine(folder, file.Name))
                    ? File.ReadAllBytes(Path.Combine(folder, file.Name))
                    : throw corrupt(file.Name, $"{file.Name} is missing", null);
                if (bytes.LongLength != file.Length)
                    throw corrupt(file.Name, $"{file.Name} has {bytes.LongLength} bytes but the manifest says {file.Length}", null);
                string actual = CheckpointStore.Sha256(bytes);
                if (!string.Equals(actual, file.Sha256, StringComparison.OrdinalIgnoreCase))
                    throw corrupt(file.Name, $"{file.Name} has SHA-256 {actual} but the manifest says {file.Sha256}", null);
                Dictionary<string, Tensor> read;
                try
                {
                    read = SafetensorsFormat.Read(bytes);
                }
                catch (InvalidDataException e)
                {
                    throw corrupt(file.Name, $"{file.Name} matches its checksum but is not a valid safetensors file ({e.Message})", e);
                }
                foreach (var (key, t) in read)
                {
                    if (key.StartsWith(CheckpointStore.OptimizerPrefix, StringComparison.Ordinal))
                    {
                        optimizer.TryAdd(key[CheckpointStore.OptimizerPrefix.Length..], t.bytes.ToArray());
                        t.Dispose();
                    }
                    else if (!tensors.TryAdd(key, t))
                    {
                        t.Dispose();
                    }
                }
            }
        }
        catch
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw;
        }
        return (tensors, optimizer);
    }
}

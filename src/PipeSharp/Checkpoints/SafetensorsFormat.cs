using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace PipeSharp.Checkpoints;

/// <summary>
/// Reads and writes the safetensors format (an 8-byte little-endian header length, a JSON header naming each tensor's
/// dtype, shape and byte range, then the raw little-endian data), as Hugging Face's <c>safetensors</c> library and
/// <c>transformers</c> read it: the header is padded to a multiple of 8 bytes so every tensor is aligned, and it
/// carries <c>"__metadata__": {"format": "pt"}</c>.
/// </summary>
internal static class SafetensorsFormat
{
    private const int MaxHeaderBytes = 100_000_000;

    private static readonly (ScalarType Type, string Name)[] Types =
    {
        (ScalarType.Float64, "F64"), (ScalarType.Float32, "F32"), (ScalarType.Float16, "F16"), (ScalarType.BFloat16, "BF16"),
        (ScalarType.Int64, "I64"), (ScalarType.Int32, "I32"), (ScalarType.Int16, "I16"), (ScalarType.Int8, "I8"),
        (ScalarType.Byte, "U8"), (ScalarType.Bool, "BOOL"),
    };

    /// <summary>Writes <paramref name="tensors"/> (any device; written in the given order) to <paramref name="stream"/>.</summary>
    public static void Write(Stream stream, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var header = new JsonObject();
        var meta = new JsonObject { ["format"] = "pt" };
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>()) meta[k] = v;
        header["__metadata__"] = meta;
        long offset = 0;
        foreach (var (name, t) in list)
        {
            long length = t.NumberOfElements * t.ElementSize;
            header[name] = new JsonObject
            {
                ["dtype"] = TypeName(t.dtype, name),
                ["shape"] = new JsonArray(t.shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + length),
            };
            offset += length;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        Span<byte> prefix = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)padded);
        stream.Write(prefix);
        stream.Write(json);
        for (int i = json.Length; i < padded; i++) stream.WriteByte((byte)' ');
        foreach (var (_, t) in list)
        {
            using var scope = NewDisposeScope();
            stream.Write(t.detach().cpu().contiguous().bytes);
        }
    }

    /// <summary>
    /// Reads every tensor (on the CPU, in file order). Throws <see cref="InvalidDataException"/> if the data is not a
    /// well-formed safetensors file.
    /// </summary>
    public static Dictionary<string, Tensor> Read(byte[] data)
    {
        if (data.Length < 8) throw new InvalidDataException($"{data.Length} bytes is too short for a safetensors file.");
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(data);
        if (headerLength > MaxHeaderBytes || (long)headerLength > data.Length - 8)
            throw new InvalidDataException($"the header length {headerLength} does not fit in the file ({data.Length} bytes).");
        var dataStart = 8 + (int)headerLength;
        JsonObject header;
        try
        {
            header = JsonNode.Parse(data.AsSpan(8, (int)headerLength))?.AsObject() ?? throw new InvalidDataException("the header is empty.");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new InvalidDataException($"the header is not a JSON object: {e.Message}", e);
        }
        var result = new Dictionary<string, Tensor>();
        try
        {
            foreach (var (name, node) in header)
            {
                if (name == "__metadata__") continue;
                var entry = node?.AsObject() ?? throw new InvalidDataException($"tensor {name} has no entry.");
                var type = ScalarTypeOf(entry["dtype"]?.GetValue<string>(), name);
                var shape = entry["shape"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray();
                var offsets = entry["data_offsets"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray();
                var t = empty(shape, dtype: type);
                long length = t.NumberOfElements * t.ElementSize;
                if (offsets.Length != 2 || offsets[1] - offsets[0] != length || offsets[0] < 0 || dataStart + offsets[1] > data.Length)
                {
                    t.Dispose();
                    throw new InvalidDataException($"tensor {name}'s byte range [{string.Join(",", offsets)}] does not fit its shape or the file.");
                }
                if (length > 0) t.bytes = data.AsSpan(dataStart + (int)offsets[0], (int)length);
                result[name] = t;
            }
        }
        catch (Exception e) when (e is not InvalidDataException)
        {
            foreach (var t in result.Values) t.Dispose();
            throw new InvalidDataException($"the header is malformed: {e.Message}", e);
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    private static string TypeName(ScalarType type, string name) =>
        Types.FirstOrDefault(t => t.Type == type).Name
        ?? throw new NotSupportedException($"tensor {name} has type {type}, which safetensors cannot store.");

    private static ScalarType ScalarTypeOf(string? name, string tensor) =>
        Types.FirstOrDefault(t => t.Name == name) is { Name: not null } found
            ? found.Type
            : throw new InvalidDataException($"tensor {tensor} has unknown dtype '{name}'.");
}

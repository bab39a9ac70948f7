using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Devices;

/// <summary>Turns device names (<c>cpu</c>, <c>cuda</c>, <c>cuda:1</c>) into checked TorchSharp devices, one per rank.</summary>
internal static class DeviceResolver
{
    /// <summary>
    /// One device per rank: all <c>cpu</c> if <paramref name="names"/> is null, the same device for every rank if
    /// one name is given, else one name per rank. Every device must exist on this machine.
    /// </summary>
    /// <exception cref="ArgumentException">A name is malformed, names a device this machine lacks, or the count is wrong.</exception>
    public static IReadOnlyList<Device> Resolve(IReadOnlyList<string>? names, int ranks)
    {
        if (names == null || names.Count == 0) return Enumerable.Repeat(CPU, ranks).ToList();
        if (names.Count != 1 && names.Count != ranks)
            throw new ArgumentException(
                $"devices has {names.Count} entries for {ranks} ranks: give one device for all ranks or one per rank.",
                "devices");
        var devices = names.Select(Parse).ToList();
        return names.Count == 1 ? Enumerable.Repeat(devices[0], ranks).ToList() : devices;
    }

    /// <summary>Parses and checks one device name.</summary>
    public static Device Parse(string name)
    {
        string text = name.Trim().ToLowerInvariant();
        string type = text, indexText = "";
        int colon = text.IndexOf(':');
        if (colon >= 0) { type = text[..colon]; indexText = text[(colon + 1)..]; }
        int index = -1;
        if (colon >= 0 && (!int.TryParse(indexText, out index) || index < 0))
            throw new ArgumentException($"device '{name}' has a bad index: write e.g. cpu, cuda or cuda:0.", "devices");
        switch (type)
        {
            case "cpu":
                return CPU;
            case "cuda":
                int count = cuda.is_available() ? cuda.device_count() : 0;
                if (count == 0)
                    throw new ArgumentException(
                        $"device '{name}' does not exist: this machine has no CUDA device (or this TorchSharp build has no CUDA support). Use cpu.",
                        "devices");
                if (index >= count)
                    throw new ArgumentException(
                        $"device '{name}' does not exist: this machine has CUDA devices cuda:0..cuda:{count - 1}.", "devices");
                return device(index < 0 ? "cuda" : $"cuda:{index}");
            default:
                throw new ArgumentException($"device '{name}' is not a known device type: use cpu, cuda or cuda:N.", "devices");
        }
    }
}

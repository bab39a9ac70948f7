using System.Security.Cryptography;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Planning;

/// <summary>
/// The key a profile is cached under: a hash of what decides the measured figures: each layer's type and its
/// parameters' names and shapes, the micro-batch's shape and element type, the device, the intra-op threads and the
/// processor (its model name, and the number of logical processors).
/// </summary>
internal static class ProfileKey
{
    /// <summary>The text the key hashes, one fact a line (kept in the cached file, so a person can see what it is for).</summary>
    public static string Describe(IEnumerable<nn.Module> layers, Tensor input, string device, int threads)
    {
        // The version of what a profile holds: a file measured before BeyondActionsSeconds is measured again.
        var sb = new StringBuilder("profile 2\n");
        int i = 0;
        foreach (var layer in layers)
        {
            sb.Append("layer ").Append(i++).Append(' ').Append(layer.GetType().FullName);
            foreach (var (name, p) in layer.named_parameters())
                sb.Append(' ').Append(name).Append('[').AppendJoin(',', p.shape).Append(']').Append(p.dtype);
            sb.Append('\n');
        }
        sb.Append("input [").AppendJoin(',', input.shape).Append("] ").Append(input.dtype).Append('\n');
        sb.Append("device ").Append(device).Append('\n');
        sb.Append("threads ").Append(threads).Append('\n');
        sb.Append("cpu ").Append(CpuModel()).Append(" x").Append(Environment.ProcessorCount).Append('\n');
        return sb.ToString();
    }

    /// <summary>A short hash of <paramref name="description"/>: 16 hex digits, safe in a file name.</summary>
    public static string Hash(string description) =>
        Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(description)))[..16].ToLowerInvariant();

    /// <summary>The processor's model name (from /proc/cpuinfo on Linux), or the architecture elsewhere.</summary>
    public static string CpuModel()
    {
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                    if (line.StartsWith("model name", StringComparison.Ordinal) && line.IndexOf(':') is var colon and > 0)
                        return line[(colon + 1)..].Trim();
        }
        catch (IOException)
        {
        }
        return System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString();
    }
}

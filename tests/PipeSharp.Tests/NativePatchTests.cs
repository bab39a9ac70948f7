using System.Text;

namespace PipeSharp.Tests;

/// <summary>The build's ELF edit that lets TorchSharp load with an older libstdc++ (build/PatchLibTorchSharp.cs).</summary>
public class NativePatchTests
{
    private static string? PackagedLibrary()
    {
        string root = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
                      ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        string path = Path.Combine(root, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        return File.Exists(path) ? path : null;
    }

    private static int Count(byte[] data, string text)
    {
        var needle = Encoding.ASCII.GetBytes(text);
        int n = 0;
        for (int i = data.AsSpan().IndexOf(needle); i >= 0;)
        {
            n++;
            int next = data.AsSpan(i + 1).IndexOf(needle);
            i = next < 0 ? -1 : i + 1 + next;
        }
        return n;
    }

    [Fact]
    public void Patch_renames_the_one_GCC13_import_and_is_idempotent()
    {
        var path = PackagedLibrary();
        Assert.True(path != null || !OperatingSystem.IsLinux(), "TorchSharp's linux-x64 native library is not in the NuGet cache");
        if (path == null) return;

        byte[] original = File.ReadAllBytes(path);
        byte[] data = (byte[])original.Clone();
        Assert.Equal("patched", PatchLibTorchSharp.Patch(data));
        Assert.Equal(original.Length, data.Length);
        Assert.Equal(1, Count(original, "_ZSt21ios_base_library_initv\0"));
        Assert.Equal(0, Count(data, "_ZSt21ios_base_library_initv\0"));
        Assert.True(Count(data, "_ZNSt8ios_base4InitC1Ev\0") > Count(original, "_ZNSt8ios_base4InitC1Ev\0"));
        // Only a few bytes change: the name, one version index, one flag.
        int changed = original.Zip(data).Count(p => p.First != p.Second);
        Assert.InRange(changed, 3, 40);

        byte[] again = (byte[])data.Clone();
        Assert.Equal("already patched", PatchLibTorchSharp.Patch(again));
        Assert.Equal(data, again);
    }

    [Fact]
    public void Patch_leaves_other_files_alone()
    {
        var text = Encoding.ASCII.GetBytes(new string('x', 100));
        Assert.Equal("not an ELF file", PatchLibTorchSharp.Patch(text));
        Assert.All(text, b => Assert.Equal((byte)'x', b));
    }
}

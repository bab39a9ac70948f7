using System.Text;
using PipeSharp.Native;

namespace PipeSharp.Tests.Packaging;

/// <summary>What <see cref="TorchNative"/> tells a user whose program cannot load TorchSharp, from the files it finds.</summary>
public sealed class TorchNativeMessageTests : IDisposable
{
    private readonly DirectoryInfo _program = Directory.CreateTempSubdirectory("pipesharp-native-message-");

    public void Dispose() => _program.Delete(recursive: true);

    private string Write(string relativePath, string content)
    {
        var path = Path.Combine(_program.FullName, relativePath);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, Encoding.ASCII.GetBytes(content));
        return path;
    }

    private const string Unpatched = "\x7f" + "ELF..._ZSt21ios_base_library_initv\0...GLIBCXX_3.4.32\0...";
    private const string Patched = "\x7f" + "ELF..._ZNSt8ios_base4InitC1Ev\0...GLIBCXX_3.4.32\0...";

    [Fact]
    public void Without_a_backend_it_names_the_libtorch_packages()
    {
        Write("runtimes/linux-x64/native/libLibTorchSharp.so", Unpatched);
        var oldLibStdCxx = Write("system/libstdc++.so.6", "GLIBCXX_3.4.30\0");

        string message = TorchNative.Explain(_program.FullName, oldLibStdCxx);

        Assert.Contains("No LibTorch native backend", message);
        Assert.Contains("dotnet add package libtorch-cpu", message);
        Assert.Contains("libtorch-cuda-12.8", message);
        Assert.DoesNotContain("GLIBCXX", message); // the missing backend is the problem to fix first
    }

    [Theory]
    [InlineData("runtimes/linux-x64/native")]
    [InlineData("")] // a RID-specific publish puts native libraries beside the program
    public void An_unpatched_copy_on_an_old_libstdcxx_is_named(string folder)
    {
        var (message, native) = ExplainCpuBackend(folder, Unpatched, "GLIBCXX_3.4.30\0");

        Assert.Contains("needs GLIBCXX_3.4.32", message);
        Assert.Contains(native, message);
        Assert.DoesNotContain("No LibTorch native backend", message);
    }

    [Fact]
    public void A_patched_copy_is_not_blamed_on_libstdcxx()
    {
        var (message, _) = ExplainCpuBackend("runtimes/linux-x64/native", Patched, "GLIBCXX_3.4.30\0");

        Assert.DoesNotContain("needs GLIBCXX", message);
        Assert.DoesNotContain("No LibTorch native backend", message);
        Assert.Contains("libtorch 2.10.0", message);
    }

    [Fact]
    public void A_new_libstdcxx_needs_no_patch()
    {
        var (message, _) = ExplainCpuBackend("runtimes/linux-x64/native", Unpatched, "GLIBCXX_3.4.30\0GLIBCXX_3.4.32\0");

        Assert.DoesNotContain("needs GLIBCXX", message);
    }

    [Fact]
    public void A_CUDA_backend_counts_as_a_backend()
    {
        Write("runtimes/win-x64/native/torch_cuda.dll", "backend");

        Assert.DoesNotContain("No LibTorch native backend", TorchNative.Explain(_program.FullName, systemLibStdCxx: null));
    }

    // A CPU backend and TorchSharp's native library (with the given content) in folder, a system libstdc++ holding
    // the given version strings: TorchNative's explanation, and the native library's path.
    private (string Message, string Native) ExplainCpuBackend(string folder, string native, string libStdCxxVersions)
    {
        Write(Path.Combine(folder, "libtorch_cpu.so"), "backend");
        var path = Write(Path.Combine(folder, "libLibTorchSharp.so"), native);
        var libStdCxx = Write("system/libstdc++.so.6", libStdCxxVersions);
        return (TorchNative.Explain(_program.FullName, libStdCxx), path);
    }
}

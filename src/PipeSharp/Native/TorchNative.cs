using System.Runtime.InteropServices;
using System.Text;
using TorchSharp;

namespace PipeSharp.Native;

/// <summary>TorchSharp's native library could not be loaded; the message says why and what to do.</summary>
public sealed class TorchLoadException(string message, Exception inner) : Exception(message, inner);

/// <summary>
/// Checks once that TorchSharp's native library loads, and turns a failure into a short message that names the
/// cause and the fix, instead of TorchSharp's long one.
/// </summary>
/// <remarks>
/// <para>
/// PipeSharp references only the managed TorchSharp package: the application must add a LibTorch native backend
/// (<c>libtorch-cpu</c>, or a CUDA build such as <c>libtorch-cuda-12.8</c>). Without one, this check says so.
/// </para>
/// <para>
/// On Linux systems whose libstdc++ predates GCC 13 (e.g. Debian 12), TorchSharp 0.107.0's native library asks
/// for GLIBCXX_3.4.32 and does not load. PipeSharp's build step (buildTransitive/PipeSharp.targets in the package,
/// build/PipeSharp.targets in the repository) patches the copy in the build or publish output on such systems, so
/// this check normally passes.
/// </para>
/// <para>
/// TorchSharp loads its native library on its first call of any kind, and creating a module first fails with a bare
/// <see cref="DllNotFoundException"/>: call <see cref="EnsureLoaded"/> at the start of a program for the short message.
/// </para>
/// </remarks>
public static class TorchNative
{
    private static readonly Lazy<Exception?> Outcome = new(TryLoad);

    /// <summary>Throws <see cref="TorchLoadException"/> if TorchSharp cannot run on this machine.</summary>
    public static void EnsureLoaded()
    {
        if (Outcome.Value is { } e) throw e;
    }

    private static Exception? TryLoad()
    {
        try
        {
            using var t = torch.zeros(1);
            return null;
        }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or EntryPointNotFoundException or NotSupportedException)
        {
            return new TorchLoadException(Explain(AppContext.BaseDirectory, SystemLibStdCxx()), e);
        }
    }

    /// <summary>LibTorch's main library in each of its builds and operating systems (CPU or CUDA).</summary>
    private static readonly string[] BackendLibraries =
    [
        "libtorch_cpu.so", "libtorch_cuda.so", "torch_cpu.dll", "torch_cuda.dll", "libtorch_cpu.dylib",
    ];

    /// <summary>
    /// Why TorchSharp did not load for a program in <paramref name="baseDirectory"/>, and the fix. Internal for tests.
    /// </summary>
    /// <param name="baseDirectory">The program's folder (its native libraries are there or under runtimes/RID/native).</param>
    /// <param name="systemLibStdCxx">The system's libstdc++.so.6 on Linux, or null.</param>
    internal static string Explain(string baseDirectory, string? systemLibStdCxx)
    {
        var folders = NativeFolders(baseDirectory);
        var why = new StringBuilder("TorchSharp's native library (libLibTorchSharp) could not be loaded. ");
        if (!folders.Any(f => BackendLibraries.Any(name => File.Exists(Path.Combine(f, name)))))
        {
            why.Append("No LibTorch native backend is next to the program: PipeSharp (like the TorchSharp package) ")
               .Append("does not bring one, the application chooses it. Add a libtorch package to the application's project: ")
               .Append("`dotnet add package libtorch-cpu` for the CPU, or a CUDA build such as `dotnet add package libtorch-cuda-12.8` ")
               .Append("for NVIDIA GPUs (CUDA builds run on the CPU too). See docs/packaging.md in the PipeSharp repository.");
        }
        else if (systemLibStdCxx != null && folders.Select(f => Path.Combine(f, "libLibTorchSharp.so")).FirstOrDefault(File.Exists) is { } native
                 && NeedsNewerLibStdCxx(native, systemLibStdCxx))
        {
            why.Append("It needs GLIBCXX_3.4.32 (the C++ library of GCC 13 or newer) and this system's libstdc++ is older. ")
               .Append($"PipeSharp's build step patches the copy in the output folder on `dotnet build` and `dotnet publish`, but {native} is not patched: ")
               .Append("build or publish the program again with the PipeSharp package referenced (not a copy of its files), ")
               .Append("or run on a system with GCC 13's libstdc++ (Ubuntu 24.04, Debian 13).");
        }
        else
        {
            why.Append("A LibTorch backend is present: check that it matches TorchSharp (libtorch 2.10.0 for TorchSharp 0.107.0), ")
               .Append("that only one backend (CPU or one CUDA build) is referenced, and that this is a 64-bit Linux, Windows or macOS process. ")
               .Append("Set LD_DEBUG=libs (Linux) to see what the loader looked for.");
        }
        return why.ToString();
    }

    /// <summary>The program's folder and the runtimes/*/native folders under it that exist.</summary>
    private static List<string> NativeFolders(string baseDirectory)
    {
        var folders = new List<string> { baseDirectory };
        var runtimes = Path.Combine(baseDirectory, "runtimes");
        if (Directory.Exists(runtimes))
        {
            folders.AddRange(Directory.EnumerateDirectories(runtimes)
                .Select(rid => Path.Combine(rid, "native"))
                .Where(Directory.Exists));
        }
        return folders;
    }

    private static string? SystemLibStdCxx()
    {
        if (!RuntimeInformation.IsOSPlatform(OSPlatform.Linux)) return null;
        string[] candidates =
        [
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib/aarch64-linux-gnu/libstdc++.so.6", "/lib/aarch64-linux-gnu/libstdc++.so.6",
            "/usr/lib64/libstdc++.so.6", "/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
        ];
        return candidates.FirstOrDefault(File.Exists);
    }

    /// <summary>
    /// The copy still imports the GCC 13 symbol (PipeSharp's patch renames it) and the system's libstdc++ lacks its version.
    /// </summary>
    private static bool NeedsNewerLibStdCxx(string native, string systemLibStdCxx)
    {
        var symbol = Encoding.ASCII.GetBytes("_ZSt21ios_base_library_initv\0");
        var version = Encoding.ASCII.GetBytes("GLIBCXX_3.4.32\0");
        return File.ReadAllBytes(native).AsSpan().IndexOf(symbol) >= 0
               && File.ReadAllBytes(systemLibStdCxx).AsSpan().IndexOf(version) < 0;
    }
}

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
/// On Linux systems whose libstdc++ predates GCC 13 (e.g. Debian 12), TorchSharp 0.107.0's native library asks
/// for GLIBCXX_3.4.32 and does not load. PipeSharp's build (build/TorchSharpNativeFix.targets) patches the copy
/// in the build output on such systems, so this check normally passes.
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
            return new TorchLoadException(Explain(), e);
        }
    }

    private static string Explain()
    {
        var why = new StringBuilder("TorchSharp's native library (libLibTorchSharp) could not be loaded. ");
        if (RuntimeInformation.IsOSPlatform(OSPlatform.Linux) && NeedsNewerLibStdCxx())
        {
            why.Append("It needs GLIBCXX_3.4.32 (the C++ library of GCC 13 or newer) and this system's libstdc++ is older. ")
               .Append("Build with `dotnet build` from the PipeSharp repository, which patches the copy in the build output, ")
               .Append("or run on a system with GCC 13's libstdc++ (Ubuntu 24.04, Debian 13).");
        }
        else
        {
            why.Append("Check that the TorchSharp-cpu package (or a TorchSharp CUDA package) was restored and copied next to the program, ")
               .Append("and that this is a 64-bit Linux, Windows or macOS process. Set LD_DEBUG=libs to see what the loader looked for.");
        }
        return why.ToString();
    }

    private static bool NeedsNewerLibStdCxx()
    {
        var native = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        string[] libstdcxx =
        [
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
        ];
        var system = libstdcxx.FirstOrDefault(File.Exists);
        if (!File.Exists(native) || system is null) return false;
        var version = Encoding.ASCII.GetBytes("GLIBCXX_3.4.32\0");
        return File.ReadAllBytes(native).AsSpan().IndexOf(version) >= 0
               && File.ReadAllBytes(system).AsSpan().IndexOf(version) < 0;
    }
}

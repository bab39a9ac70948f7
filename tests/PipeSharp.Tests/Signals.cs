using System.Runtime.InteropServices;

namespace PipeSharp.Tests;

/// <summary>Sends POSIX signals to processes the tests started (by process id).</summary>
internal static class Signals
{
    public const int Interrupt = 2;  // SIGINT
    public const int Terminate = 15; // SIGTERM

    /// <summary>Sends <paramref name="signal"/> to process <paramref name="pid"/>; fails the test if it cannot.</summary>
    public static void Send(int pid, int signal)
    {
        if (kill(pid, signal) != 0)
            Assert.Fail($"kill({pid}, {signal}) failed with errno {Marshal.GetLastPInvokeError()}");
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);
}

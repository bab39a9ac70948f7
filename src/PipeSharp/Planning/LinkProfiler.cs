using System.Diagnostics;
using PipeSharp.Backends;
using PipeSharp.InProcess;
using PipeSharp.Transport;
using static TorchSharp.torch;

namespace PipeSharp.Planning;

/// <summary>
/// Measures what a message between two ranks costs (<see cref="LinkCost"/>): a ping-pong of a small and a large
/// tensor through the transport the pipeline uses, each one-way time the median of several round trips halved, and
/// the line through the two points (latency + seconds per byte).
/// </summary>
public static class LinkProfiler
{
    /// <summary>Bytes of the small message (its time is taken as the latency).</summary>
    public const int SmallBytes = 256;

    /// <summary>Bytes of the large message in one process (the slope from the small one is the time per byte).</summary>
    public const int LargeBytes = 4 << 20;

    /// <summary>Bytes of the large message across processes: large enough that copying it outweighs the transport's polling.</summary>
    public const int LargeBytesAcrossProcesses = 32 << 20;

    /// <summary>Between two ranks that are threads of this process (the in-process transport: a keyed mailbox).</summary>
    /// <param name="repeats">Round trips per message size.</param>
    public static LinkCost InProcess(int repeats = 20)
    {
        using var transport = new InProcessTransport();
        var times = new double[2];
        for (int size = 0; size < 2; size++)
        {
            using var message = zeros((size == 0 ? SmallBytes : LargeBytes) / 4, dtype: float32);
            var echo = new Thread(() => Echo(transport, 1, 0, repeats + 1, size, CancellationToken.None)) { IsBackground = true };
            echo.Start();
            times[size] = PingPong(transport, 0, 1, repeats + 1, size, message, CancellationToken.None);
            echo.Join();
        }
        return Fit(times[0], times[1], LargeBytes);
    }

    /// <summary>
    /// Between every pair of processes of <paramref name="backend"/> (e.g. MPI), through its transport: every process
    /// calls it; each pair ping-pongs in turn (the others wait at a barrier), and every process gets the whole matrix
    /// (entry [i, j] for processes i and j; the diagonal is <see cref="LinkCost.Free"/>). One process: a 1 x 1 matrix.
    /// </summary>
    /// <param name="backend">The backend (all processes of the job).</param>
    /// <param name="repeats">Round trips per message size and pair.</param>
    public static LinkCost[,] AcrossProcesses(IBackend backend, int repeats = 10)
    {
        ArgumentNullException.ThrowIfNull(backend);
        int n = backend.ProcessCount, me = backend.ProcessIndex;
        var result = new LinkCost[n, n];
        var seconds = new double[n * n * 2];
        int rounds = repeats + 1;
        using (var transport = backend.CreateTransport(n, 2 * rounds, key => key.Stage, 1))
        {
            var token = backend.FailureToken;
            for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
            {
                for (int size = 0; size < 2; size++)
                {
                    if (me == i)
                    {
                        using var message = zeros((size == 0 ? SmallBytes : LargeBytesAcrossProcesses) / 4, dtype: float32);
                        seconds[(i * n + j) * 2 + size] = PingPong(transport, i, j, rounds, size, message, token);
                    }
                    else if (me == j)
                    {
                        Echo(transport, j, i, rounds, size, token);
                    }
                }
                backend.Barrier(token);
            }
        }
        var all = backend.AllReduceSum(seconds);
        for (int i = 0; i < n; i++)
        {
            result[i, i] = LinkCost.Free;
            for (int j = i + 1; j < n; j++)
                result[i, j] = result[j, i] = Fit(all[(i * n + j) * 2], all[(i * n + j) * 2 + 1], LargeBytesAcrossProcesses);
        }
        return result;
    }

    // Sends to `peer` and waits for the echo, `rounds` times (the first is a warm-up); the median one-way seconds.
    private static double PingPong(ITransport transport, int me, int peer, int rounds, int size, Tensor message, CancellationToken token)
    {
        var times = new List<double>();
        for (int r = 0; r < rounds; r++)
        {
            int tag = size * rounds + r;
            long t0 = Stopwatch.GetTimestamp();
            transport.SendTo(peer, new MessageKey(MessageKind.Activation, peer, tag, me, 0), message.alias());
            using var back = transport.Receive(new MessageKey(MessageKind.Gradient, me, tag, peer, 0), token);
            double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            if (r > 0) times.Add(seconds / 2);
        }
        return ProfileRun.Median(times);
    }

    private static void Echo(ITransport transport, int me, int peer, int rounds, int size, CancellationToken token)
    {
        for (int r = 0; r < rounds; r++)
        {
            int tag = size * rounds + r;
            var got = transport.Receive(new MessageKey(MessageKind.Activation, me, tag, peer, 0), token);
            transport.SendTo(peer, new MessageKey(MessageKind.Gradient, peer, tag, me, 0), got);
        }
    }

    private static LinkCost Fit(double small, double large, int largeBytes)
    {
        double perByte = Math.Max(0, (large - small) / (largeBytes - SmallBytes));
        return new LinkCost(Math.Max(0, small - perByte * SmallBytes), perByte);
    }
}

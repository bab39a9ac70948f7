using System.Globalization;

namespace PipeSharp.Bench.Mpi;

/// <summary>Command-line options. Every rank parses the same arguments (mpirun passes them to all), so all agree.</summary>
internal sealed record MpiBenchOptions
{
    /// <summary>Rounds; each round measures both variants of every measurement once, in alternating order.</summary>
    public int Rounds { get; init; } = 5;

    /// <summary>
    /// Rounds of the ping-pong: three times <see cref="Rounds"/>, since a ping-pong measurement lasts tens of
    /// milliseconds and its ratios are medians over rounds.
    /// </summary>
    public int PingPongRounds => 3 * Rounds;

    /// <summary>Timed training steps per pipeline measurement.</summary>
    public int Steps { get; init; } = 10;

    /// <summary>Untimed training steps per pipeline before the first round.</summary>
    public int WarmupSteps { get; init; } = 3;

    /// <summary>Message sizes of the ping-pong, in bytes.</summary>
    public IReadOnlyList<int> Sizes { get; init; } = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20];

    /// <summary>
    /// Bytes sent each way per ping-pong measurement: small messages get many iterations, large ones few (at least
    /// <see cref="MinIterations"/>), so every measurement lasts about as long.
    /// </summary>
    public long VolumePerMeasurement { get; init; } = 64L << 20;

    public const int MinIterations = 8;

    /// <summary>Micro-batches of the pipelines.</summary>
    public int MicroBatches { get; init; } = 8;

    public bool Bandwidth { get; init; } = true;
    public bool StepTime { get; init; } = true;
    public bool Straggler { get; init; }

    public int Iterations(int bytes) => (int)Math.Max(MinIterations, VolumePerMeasurement / bytes);

    public const string Usage = """
        PipeSharp.Bench.Mpi: PipeSharp over MPI against raw MPI (bandwidth) and against the in-process pipeline (step time).
        Start it with exactly 2 processes:
          mpirun.mpich -np 2 dotnet bench/PipeSharp.Bench.Mpi/bin/Release/net10.0/PipeSharp.Bench.Mpi.dll [options]
          --rounds N        rounds; each measures both variants once, alternating which goes first; default 5
                    (the ping-pong runs 3 x N rounds)
          --steps N         timed training steps per pipeline measurement; default 10
          --warmup N        untimed training steps per pipeline before the first round; default 3
          --sizes LIST      ping-pong message sizes, e.g. 64K,1M,64M; default 64K,256K,1M,4M,16M,64M
          --megabytes N     data sent each way per ping-pong measurement (iterations = N MB / size, at least 8); default 64
          --microbatches N  micro-batches of both pipelines; default 8
          --only WHAT       bandwidth, steps or straggler: run one measurement (straggler, item 6 of issue 13, runs only so:
                            it pins each process to a core and shares rank 0's with a busy loop; needs a quiet machine)
          --quick           smoke test (~10 s): 2 rounds, 2 steps, 1 warm-up step, 8 MB per ping-pong measurement
          --help            this text
        """;

    /// <summary>Parses the arguments; returns null (after printing why, on rank 0) when the program should stop.</summary>
    public static MpiBenchOptions? Parse(string[] args, bool print)
    {
        try
        {
            return ParseOrThrow(args, print);
        }
        catch (ArgumentException e)
        {
            if (print) Console.Error.WriteLine($"{e.Message}\n{Usage}");
            Environment.ExitCode = 2;
            return null;
        }
    }

    private static MpiBenchOptions? ParseOrThrow(string[] args, bool print)
    {
        var o = new MpiBenchOptions();
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--rounds": o = o with { Rounds = Whole(args, ref i, 1) }; break;
                case "--steps": o = o with { Steps = Whole(args, ref i, 1) }; break;
                case "--warmup": o = o with { WarmupSteps = Whole(args, ref i, 0) }; break;
                case "--megabytes": o = o with { VolumePerMeasurement = (long)Whole(args, ref i, 1) << 20 }; break;
                case "--microbatches": o = o with { MicroBatches = Whole(args, ref i, 1) }; break;
                case "--sizes":
                    if (++i >= args.Length) throw new ArgumentException("--sizes needs a list of sizes, e.g. 64K,1M,64M.");
                    o = o with { Sizes = args[i].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(ParseSize).ToList() };
                    break;
                case "--only":
                    if (++i >= args.Length || args[i] is not ("bandwidth" or "steps" or "straggler"))
                        throw new ArgumentException("--only needs 'bandwidth', 'steps' or 'straggler'.");
                    o = o with { Bandwidth = args[i] == "bandwidth", StepTime = args[i] == "steps", Straggler = args[i] == "straggler" };
                    break;
                case "--quick": o = o with { Rounds = 2, Steps = 2, WarmupSteps = 1, VolumePerMeasurement = 8L << 20 }; break;
                case "--help" or "-h":
                    if (print) Console.WriteLine(Usage);
                    return null;
                default:
                    throw new ArgumentException($"Unknown option '{args[i]}'.");
            }
        }
        return o;
    }

    // 64K, 1M, 65536: a whole number of float32 elements, at most 1 GB (one MPI message counts bytes in an int).
    private static int ParseSize(string text)
    {
        string t = text.ToUpperInvariant();
        long unit = t.EndsWith('K') ? 1 << 10 : t.EndsWith('M') ? 1 << 20 : 1;
        if (unit > 1) t = t[..^1];
        if (!long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n * unit is < 4 or > (1L << 30) || n * unit % 4 != 0)
            throw new ArgumentException($"--sizes: '{text}' is not a size between 4 bytes and 1G, a multiple of 4 (float32), like 64K or 16M.");
        return (int)(n * unit);
    }

    private static int Whole(string[] args, ref int i, int min)
    {
        string name = args[i];
        if (++i >= args.Length || !int.TryParse(args[i], out int n) || n < min)
            throw new ArgumentException($"{name} needs a whole number >= {min}.");
        return n;
    }

    public static string FormatSize(long bytes) =>
        bytes >= 1 << 20 && bytes % (1 << 20) == 0 ? $"{bytes >> 20} MB" : bytes >= 1 << 10 && bytes % (1 << 10) == 0 ? $"{bytes >> 10} KB" : $"{bytes} B";
}

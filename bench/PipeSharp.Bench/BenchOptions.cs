namespace PipeSharp.Bench;

/// <summary>Command-line options of the benchmark.</summary>
internal sealed record BenchOptions
{
    /// <summary>Rounds; each round measures every variant once, in a rotated order.</summary>
    public int Rounds { get; init; } = 5;

    /// <summary>Timed training steps per measurement.</summary>
    public int Steps { get; init; } = 16;

    /// <summary>Untimed steps per variant before the first round.</summary>
    public int WarmupSteps { get; init; } = 3;

    /// <summary>Whether to run the instrumented diagnostics of the pipeline after the rounds.</summary>
    public bool Diagnostics { get; init; } = true;

    /// <summary>Keys of the variants to measure (e.g. a, c); null for all.</summary>
    public IReadOnlySet<string>? Only { get; init; }

    /// <summary>Whether the diagnostics print one step's timeline of the 2-stage pipeline.</summary>
    public bool Timeline { get; init; }

    public const string Usage = """
        PipeSharp.Bench: samples/s of a 4-layer 1024-wide MLP, plain TorchSharp vs PipeSharp (interleaved rounds).
          --rounds N        rounds (each measures every variant once); default 5
          --steps N         timed training steps per measurement; default 16
          --warmup N        untimed steps per variant before the first round; default 3
          --no-diagnostics  skip the instrumented pipeline analysis after the rounds
          --only KEYS       measure only these variants, e.g. --only a,c (for investigating one ratio)
          --timeline        also print one step of the 2-stage pipeline, action by action
          --quick           tiny run for a CI smoke test (~10 s): 2 rounds x 2 steps, 1 warm-up step, no diagnostics
          --help            this text
        """;

    /// <summary>Parses the arguments; returns null (after printing why) when the program should stop.</summary>
    public static BenchOptions? Parse(string[] args)
    {
        try
        {
            return ParseOrThrow(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"{e.Message}\n{Usage}");
            Environment.ExitCode = 2;
            return null;
        }
    }

    private static BenchOptions? ParseOrThrow(string[] args)
    {
        var o = new BenchOptions();
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--rounds": o = o with { Rounds = Positive(args, ref i) }; break;
                case "--steps": o = o with { Steps = Positive(args, ref i) }; break;
                case "--warmup": o = o with { WarmupSteps = Positive(args, ref i, allowZero: true) }; break;
                case "--no-diagnostics": o = o with { Diagnostics = false }; break;
                case "--timeline": o = o with { Timeline = true }; break;
                case "--only":
                    if (++i >= args.Length) throw new ArgumentException("--only needs variant keys, e.g. a,c.");
                    o = o with { Only = args[i].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet() };
                    break;
                case "--quick": o = o with { Rounds = 2, Steps = 2, WarmupSteps = 1, Diagnostics = false }; break;
                case "--help" or "-h":
                    Console.WriteLine(Usage);
                    return null;
                default:
                    throw new ArgumentException($"Unknown option '{args[i]}'.");
            }
        }
        return o;
    }

    private static int Positive(string[] args, ref int i, bool allowZero = false)
    {
        string name = args[i];
        if (++i >= args.Length || !int.TryParse(args[i], out int n) || n < (allowZero ? 0 : 1))
            throw new ArgumentException($"{name} needs a whole number {(allowZero ? ">= 0" : ">= 1")}.");
        return n;
    }
}

using System.CommandLine;

namespace PipeSharp.Cli.Options;

/// <summary>Options for replicas (data parallelism) and for runs across MPI processes (train and verify).</summary>
internal static class ClusterOptions
{
    public static readonly Option<int> Replicas = new("--replicas", "-d", RenamedOptions.OldName("--replicas"))
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Replicas of the pipeline (data parallelism): each takes 1/D of every batch and gradients are summed " +
                      "over them. Under mpirun the N processes form D replicas of N/D ranks (N must be ranks x D); " +
                      "without mpirun the replicas are thread groups of this process. (--data-parallel is its old name.)",
        DefaultValueFactory = _ => 1,
        HelpName = "D",
    };

    public static readonly Option<double> PeerTimeout = new("--peer-timeout")
    {
        CustomParser = Numbers.Positive,
        Description = "(mpirun) Seconds another rank may stay silent (no heartbeat) before this rank stops and names it as lost.",
        DefaultValueFactory = _ => 30,
        HelpName = "SECONDS",
    };

    public static readonly Option<string?> LogDirectory = new("--log-dir")
    {
        Description = "(mpirun) Each rank also writes everything it prints to DIR/rank-N.log. Without it only rank 0 prints " +
                      "(and every rank prints its errors).",
        HelpName = "DIR",
    };

    public static readonly Option<string?> InjectFailure = new("--inject-failure")
    {
        Description = "For testing failure handling: rank R (in MPI, process R) throws inside its stage's forward " +
                      "during step S. Format R:S.",
        HelpName = "R:S",
        Hidden = true,
    };

    /// <summary>Every option above, in help order.</summary>
    public static IEnumerable<Option> All => [Replicas, PeerTimeout, LogDirectory, InjectFailure];
}

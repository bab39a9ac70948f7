using System.Text.RegularExpressions;

namespace PipeSharp.Tests.Mpi;

/// <summary>
/// Models whose stages pass several tensors, across MPI processes: a U-Net-like model whose skips cross stages and a
/// transformer whose stages pass hidden state and a padding mask train to the parameters of single-device training
/// under every schedule (<c>pipesharp verify --model ...</c>, one stage per process; with 2 chunks per rank the
/// skips go between pieces that are not neighbours), also with two data-parallel replicas.
/// </summary>
[Collection(MpiCollection.Name)]
public class MpiBoundaryTests
{
    private static readonly TimeSpan Long = TimeSpan.FromMinutes(4);

    [MpiTheory]
    [InlineData(2, "unet", 1)]
    [InlineData(2, "transformer", 1)]
    [InlineData(4, "unet", 1)]
    [InlineData(4, "transformer", 2)]
    public void Models_passing_several_tensors_match_single_device_training_on_MPI_ranks(int processes, string model, int replicas)
    {
        var run = MpiJob.Run(processes, $"verify --model {model} --steps 3 --replicas {replicas}", Long);
        Assert.True(run.ExitCode == 0, run.Output);
        int ranks = processes / replicas;
        Assert.Contains($"{processes} MPI processes: {replicas} replica{(replicas == 1 ? "" : "s")} x {ranks} ranks", run.Output);
        var lines = Regex.Matches(run.Output, $@"^{model}\s+adam\s+(\S+)\s+{ranks}\s+\d+\s+\S+\s+ok$", RegexOptions.Multiline);
        Assert.Equal(5, lines.Select(m => m.Groups[1].Value).Distinct().Count()); // every schedule
        Assert.Matches(@"\d+ checks, 0 mismatches", run.Output);
        Assert.DoesNotContain("FAIL", run.Output);
    }
}

/// <summary>A theory that needs MPICH's launcher; skipped (with the reason) where it is not installed.</summary>
public sealed class MpiTheoryAttribute : TheoryAttribute
{
    public MpiTheoryAttribute()
    {
        if (MpiJob.Launcher is null) Skip = "mpirun.mpich is not installed (apt-get install mpich; .ci/run installs it).";
    }
}

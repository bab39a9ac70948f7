namespace PipeSharp.Tests.Mpi;

/// <summary>The profiler's link cost between MPI processes (ping-pong through the MPI transport), in a 2-process job.</summary>
[Collection(MpiCollection.Name)]
public class MpiLinkTests
{
    private static readonly string Program = MpiJob.Built("tests", "PipeSharp.Tests.MpiRanks");

    [MpiFact]
    public void The_link_between_two_processes_is_measured_alike_on_both()
    {
        var run = MpiJob.Run(2, "links", TimeSpan.FromMinutes(2), program: Program);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("rank 0: link 0-1 measured", run.Output);
        Assert.Contains("rank 1: link 0-1 measured", run.Output);
    }
}

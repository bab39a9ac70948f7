namespace PipeSharp.Tests.Mpi;

/// <summary>
/// Models built per stage under MPI (the program PipeSharp.Tests.MpiRanks): each process builds only its own layers,
/// bitwise those of one process; a checkpoint written by 4 ranks resumes on 2 and the other way round, each rank
/// reading only its own layers' files.
/// </summary>
[Collection(MpiCollection.Name)]
public class MpiConstructionTests
{
    private static readonly string Program = MpiJob.Built("tests", "PipeSharp.Tests.MpiRanks");

    /// <summary>
    /// With 2 ranks (1F1B), 2 ranks x 2 stages (interleaved) and 2 replicas of one rank, a process calls only the
    /// factories of its own stages' layers, once each, and its parameters have the SHA-256s of the spec built whole.
    /// </summary>
    [MpiFact]
    public void Each_process_builds_only_its_own_layers_bitwise_equal_to_one_process()
    {
        var run = MpiJob.Run(2, "construction", TimeSpan.FromMinutes(2), program: Program);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("rank 0: 1f1b: built layers 0,1,2 ", run.Output);
        Assert.Contains("rank 1: 1f1b: built layers 3,4,5 ", run.Output);
        Assert.Contains("rank 0: builds its own layers only, bitwise equal to one process", run.Output);
        Assert.Contains("rank 1: builds its own layers only, bitwise equal to one process", run.Output);
    }

    [MpiTheory]
    [InlineData(4, 2)]
    [InlineData(2, 4)]
    public void A_checkpoint_written_by_one_number_of_ranks_resumes_on_another_reading_only_each_ranks_layers(int written, int resumed)
    {
        using var folder = new TempFolder();
        var write = MpiJob.Run(written, $"checkpoint-write {folder["ck"]}", TimeSpan.FromMinutes(2), program: Program);
        Assert.True(write.ExitCode == 0, write.Output);
        Assert.Contains($"rank {written - 1}: wrote its layers ({written} ranks)", write.Output);
        var resume = MpiJob.Run(resumed, $"checkpoint-resume {folder["ck"]}", TimeSpan.FromMinutes(2), program: Program);
        Assert.True(resume.ExitCode == 0, resume.Output);
        for (int r = 0; r < resumed; r++) Assert.Contains($"rank {r}: resumed as an uninterrupted run ({resumed} ranks)", resume.Output);
    }
}

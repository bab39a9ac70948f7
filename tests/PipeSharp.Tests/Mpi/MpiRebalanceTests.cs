namespace PipeSharp.Tests.Mpi;

/// <summary>
/// Layers moved between processes while training (the program PipeSharp.Tests.MpiRanks, check "rebalance"): forced
/// moves every two steps on 2 and 3 ranks and on 2 ranks x 2 replicas train exactly as the unmoved run of one process
/// (a GPT with a tied embedding and AdamW; on 2 processes also an MLP with SGD and momentum), and a moved-away layer
/// frees its memory on the old process.
/// </summary>
[Collection(MpiCollection.Name)]
public class MpiRebalanceTests
{
    private static readonly string Program = MpiJob.Built("tests", "PipeSharp.Tests.MpiRanks");

    [MpiTheory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Forced_moves_between_processes_train_exactly_as_an_unmoved_run(int processes)
    {
        var run = MpiJob.Run(processes, "rebalance", TimeSpan.FromMinutes(3), program: Program);
        Assert.True(run.ExitCode == 0, run.Output);
        for (int r = 0; r < processes; r++) Assert.Contains($"rank {r}: moved runs equal the unmoved run ({processes} processes)", run.Output);
        Assert.Contains(processes == 3 ? "rank 0: gpt: 6 moves" : "rank 0: gpt: 3 moves", run.Output);
        if (processes == 2)
        {
            Assert.Contains("rank 0: moving layer 1 changed this process's heap by -", run.Output);
            Assert.Contains("rank 0: mlp: 3 moves", run.Output);
        }
    }
}

/// <summary>
/// A real straggler (check "straggler"): rank 0 pinned to a core it shares with a busy loop, rank 1 alone on the other;
/// with automatic rebalancing, layers move from rank 0 to rank 1 and the steps after the move are clearly faster than
/// before (the rank program asserts 1.15x; the speed targets are the benchmark's, bench/PipeSharp.Bench.Mpi
/// --straggler). It measures speed with both cores, so it runs alone.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class MpiStragglerTests
{
    private static readonly string Program = MpiJob.Built("tests", "PipeSharp.Tests.MpiRanks");

    [MpiFact]
    public void With_a_slow_rank_layers_move_off_it_and_steps_get_faster()
    {
        var run = MpiJob.Run(2, "straggler", TimeSpan.FromMinutes(3), program: Program);
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("rank 0: straggler: moved layers", run.Output);
        Assert.Contains("from rank 0 to rank 1", run.Output);
    }
}

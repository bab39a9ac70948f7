// Checks run inside the ranks of a 2-process MPI job; each prints what it checked and exits 0, or throws (exit 1).
//   mpirun.mpich -np 2 dotnet PipeSharp.Tests.MpiRanks.dll transport   the MPI transport, message by message
//   mpirun.mpich -np 2 dotnet PipeSharp.Tests.MpiRanks.dll memory      a rank frees the stages it does not train
//   mpirun.mpich -np 2 dotnet PipeSharp.Tests.MpiRanks.dll keys        every key of a pipeline with skips has its own tag
//   mpirun.mpich -np 2 dotnet PipeSharp.Tests.MpiRanks.dll skips       a skip goes straight from its maker's process to its reader's
//   mpirun.mpich -np 2 dotnet PipeSharp.Tests.MpiRanks.dll evaluation  an evaluation's bytes do not grow with the vocabulary
//   mpirun.mpich -np 2 dotnet PipeSharp.Tests.MpiRanks.dll construction  a spec model: each process builds its own layers only
//   mpirun.mpich -np N dotnet PipeSharp.Tests.MpiRanks.dll checkpoint-write DIR    N ranks save a checkpoint (any N)
//   mpirun.mpich -np M dotnet PipeSharp.Tests.MpiRanks.dll checkpoint-resume DIR   M ranks resume it, reading their layers only
//   mpirun.mpich -np 2 dotnet PipeSharp.Tests.MpiRanks.dll recompute   recomputation (with dropout) trains as without it
//   mpirun.mpich -np 2 dotnet PipeSharp.Tests.MpiRanks.dll budget      a rank's measured memory peak agrees with its prediction
//   mpirun.mpich -np N dotnet PipeSharp.Tests.MpiRanks.dll rebalance   layers moved between processes train as unmoved (N = 2, 3, 4)
//   mpirun.mpich -np 2 dotnet PipeSharp.Tests.MpiRanks.dll straggler   rank 0 at half speed (a busy loop on its core): rebalancing moves layers off it
//   mpirun.mpich -np 2 dotnet PipeSharp.Tests.MpiRanks.dll links       the profiler's link cost between the processes
using PipeSharp.Mpi;
using PipeSharp.Native;
using PipeSharp.Tests.MpiRanks;

TorchNative.EnsureLoaded();
using var cluster = MpiCluster.Initialize(TimeSpan.FromSeconds(20));
bool layouts = args is ["checkpoint-write" or "checkpoint-resume", _] || args is ["rebalance"];
if ((cluster.Size != 2 || args.Length != 1 || args[0] is not ("transport" or "memory" or "keys" or "skips" or "evaluation" or "construction" or "recompute" or "budget" or "straggler" or "links")) && !layouts)
{
    Console.Error.WriteLine($"rank {cluster.Rank}: usage: mpirun.mpich -np 2 dotnet PipeSharp.Tests.MpiRanks.dll transport|memory|keys|skips|evaluation|construction|recompute|budget|straggler|links, or -np N rebalance|checkpoint-write DIR|checkpoint-resume DIR " +
                            $"(this job has {cluster.Size} processes)");
    return 2;
}
try
{
    if (args[0] == "transport") TransportCheck.Run(cluster);
    else if (args[0] == "keys") KeyCheck.Run(cluster);
    else if (args[0] == "skips") SkipCheck.Run(cluster);
    else if (args[0] == "memory") MemoryCheck.Run(cluster);
    else if (args[0] == "construction") ConstructionCheck.Run(cluster);
    else if (args[0] == "checkpoint-write") CheckpointLayoutCheck.Write(cluster, args[1]);
    else if (args[0] == "checkpoint-resume") CheckpointLayoutCheck.Resume(cluster, args[1]);
    else if (args[0] == "recompute") RecomputationCheck.Run(cluster);
    else if (args[0] == "budget") BudgetCheck.Run(cluster);
    else if (args[0] == "rebalance") RebalanceCheck.Run(cluster);
    else if (args[0] == "straggler") StragglerCheck.Run(cluster);
    else if (args[0] == "links") LinkCheck.Run(cluster);
    else EvaluationCheck.Run(cluster);
    return 0;
}
catch (Exception e)
{
    Console.Error.WriteLine($"rank {cluster.Rank}: {e}");
    cluster.ReportFailure(e);
    return 1;
}

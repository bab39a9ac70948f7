using PipeSharp.Backends;
using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Transport;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>
/// The runtime's view of a backend: the plan's topology comes from the backend's hosted ranks, the old option names
/// forward to the new ones, and memory is measured through the action interpreter.
/// </summary>
public class BackendSeamTests
{
    // A backend that claims to be process `index` of `count`, one rank per process, for planning only.
    private sealed class PlanningBackend(int index, int count, int perHost) : IBackend
    {
        public int ProcessCount => count;
        public int ProcessIndex => index;
        public string HostName => "test";
        public Exception? Failure => null;
        public CancellationToken FailureToken => CancellationToken.None;
        public void ReportFailure(Exception error) { }
        public double[] AllReduceSum(double[] values, CancellationToken cancellation = default) => values;
        public long[] AllReduceSum(long[] values, CancellationToken cancellation = default) => values;
        public void Barrier(CancellationToken cancellation = default) { }
        IReadOnlyList<int> IBackend.HostedRanks(int ranks, int replicas) =>
            ranks * replicas == count ? [index] : throw new ArgumentException("does not fit", "backend");
        int IBackend.ProcessesOnThisHost => perHost;
        ITransport IBackend.CreateTransport(int stages, int microBatches, Func<MessageKey, int> destination, int values) => throw new NotSupportedException();
        IProcessGroup? IBackend.Split(int color, int key) => throw new NotSupportedException();
        void IBackend.DescribeRanksAs(Func<int, string> role) { }
        Exception? IBackend.NewFailureException() => null;
    }

    private static List<nn.Module<Tensor, Tensor>> Layers(int count) =>
        Enumerable.Range(0, count).Select(_ => (nn.Module<Tensor, Tensor>)nn.Linear(4, 4)).ToList();

    [Fact]
    public void A_plan_takes_its_topology_from_the_backend()
    {
        var options = new PipelineOptions { Ranks = 2, Replicas = 2, MicroBatches = 2, Schedule = "zb-v" };
        var plan = PipelinePlan.Create(options, Layers(8), new PlanningBackend(index: 3, count: 4, perHost: 2), copiesModel: false);
        Assert.Equal(2, plan.Ranks);
        Assert.False(plan.HostsAll);
        Assert.Equal([1], plan.LocalReplicas);                      // job rank 3 = replica 1, rank 1
        // zb-v on 2 ranks: 4 stages in a V, rank 1 holds stages 1 and 2.
        Assert.Equal([false, true, true, false], Enumerable.Range(0, 4).Select(plan.IsLocal));
        Assert.Equal(Math.Max(1, Environment.ProcessorCount / 2), plan.ThreadsPerRank); // cores shared by the 2 processes on the host
    }

    [Fact]
    public void A_plan_refuses_a_job_whose_processes_do_not_fit_before_anything_is_built()
    {
        var options = new PipelineOptions { Ranks = 2, Replicas = 2, MicroBatches = 2 };
        var e = Assert.Throws<ArgumentException>(() => PipelinePlan.Create(options, Layers(4), new PlanningBackend(0, 3, 1), copiesModel: false));
        Assert.Equal("backend", e.ParamName);
    }

    [Fact]
    public void In_one_process_every_rank_is_hosted()
    {
        var options = new PipelineOptions { Ranks = 2, Replicas = 2, MicroBatches = 2, ThreadsPerRank = 1 };
        var plan = PipelinePlan.Create(options, Layers(4), new InProcess.InProcessBackend(), copiesModel: true);
        Assert.True(plan.HostsAll);
        Assert.Equal([0, 1], plan.LocalReplicas);
        Assert.Equal(1, plan.ThreadsPerRank);
    }

#pragma warning disable CS0618 // the old names, on purpose
    [Fact]
    public void The_old_option_names_forward_to_the_new_ones()
    {
        var backend = new InProcess.InProcessBackend();
        var old = new PipelineOptions { Stages = 3, Chunks = 2, DataParallel = 4, ThreadsPerStage = 5, Cluster = backend };
        Assert.Equal(new PipelineOptions { Ranks = 3, StagesPerRank = 2, Replicas = 4, ThreadsPerRank = 5, Backend = backend }, old);
        Assert.Equal((3, 2, 4, 5), (old.Stages, old.Chunks, old.DataParallel, old.ThreadsPerStage));
        Assert.Same(backend, old.Cluster);
    }
#pragma warning restore CS0618
}

/// <summary>
/// Memory measured through the action interpreter. It reads the process-wide native heap, so it runs alone: a test
/// beside it allocating or freeing would move the figures (a stage of a few kilobytes read 0 once in CI).
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class MemoryMeasurementSeamTests
{
    [Fact]
    public void Memory_is_measured_through_the_action_interpreter_and_leaves_the_pipeline_as_it_was()
    {
        manual_seed(4);
        // Wide enough that each kept tensor (4 x 512 floats) comes from glibc's arenas, whose in-use count the heap
        // reading sees: chunks of 1 KB or less are recycled through per-thread caches that count as in use when freed.
        using var model = Mlp.Create(32, 512, 8, 4);
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = "1f1b", ThreadsPerRank = 1 },
            EquivalenceTests.CrossEntropy, ps => optim.SGD(ps, 0.1));
        using var data = new SyntheticClassification([32], 8, seed: 1);
        var (x, y) = data.NextBatch(16);
        using (x)
        using (y)
        {
            var memory = pipe.MeasureMemory(x);
            Assert.Equal([0, 1], memory.Select(m => m.Stage));
            Assert.Equal(pipe.Stages.Select(s => s.ParameterCount * 4), memory.Select(m => m.ParameterBytes)); // float32
            Assert.Equal([2, 1], memory.Select(m => m.PeakMicroBatches)); // 1F1B on 2 ranks: stage 0 holds 2 forwards, stage 1 one
            if (OperatingSystem.IsLinux()) Assert.All(memory, m => Assert.True(m.ActivationBytesPerMicroBatch > 0, $"stage {m.Stage}"));
            // The measurement kept nothing and sent nothing that a step could trip over: the pipeline still trains.
            Assert.True(float.IsFinite(pipe.TrainStep(x, y)));
            Assert.Null(pipe.LastForward); // measuring is not a Forward
        }
    }
}

using System.Runtime;
using PipeSharp.Models;
using PipeSharp.Native;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>
/// The pause the runtime takes while several workers step TorchSharp optimizers (whose implicit Scalar temporaries a
/// collection on another thread could free during the native call: Native/CollectionPause).
/// </summary>
[Collection(ProcessWideCollection.Name)] // it changes the process's GC mode
public class CollectionPauseTests
{
    [Fact]
    public void No_collection_happens_while_two_threads_allocate_inside_the_pause()
    {
        int before;
        var threads = new Thread[2];
        using (CollectionPause.Enter())
        {
            Assert.Equal(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode);
            before = GC.CollectionCount(0);
            for (int t = 0; t < threads.Length; t++)
            {
                threads[t] = new Thread(() =>
                {
                    using (CollectionPause.Enter()) // a second holder joins the same pause
                        for (int k = 0; k < 2_000; k++) GC.KeepAlive(new byte[1000]); // 2 MB per thread, under the budget
                });
                threads[t].Start();
            }
            foreach (var t in threads) t.Join();
            Assert.Equal(before, GC.CollectionCount(0));
            Assert.Equal(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode); // the inner holders did not end it
        }
        Assert.NotEqual(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode);
    }

    [Fact]
    public void A_pause_not_asked_for_changes_nothing_and_an_application_region_is_left_alone()
    {
        var mode = GCSettings.LatencyMode;
        using (CollectionPause.Enter(when: false)) Assert.Equal(mode, GCSettings.LatencyMode);
        Assert.True(GC.TryStartNoGCRegion(64 << 20));
        Assert.Equal(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode);
        using (CollectionPause.Enter()) Assert.Equal(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode);
        Assert.Equal(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode); // still the application's
        GC.EndNoGCRegion();
    }

    [Fact]
    public void Steps_of_four_ranks_with_AdamW_leave_the_process_out_of_the_pause_and_train_as_before()
    {
        manual_seed(3);
        using var x = randn(16, 32);
        using var y = randint(0, 4, [16]);
        float Train(int ranks)
        {
            manual_seed(5);
            using var pipe = new Pipeline(Mlp.Create(32, 64, 4, 8), new PipelineOptions { Ranks = ranks, MicroBatches = 4, ThreadsPerRank = 1 },
                (o, t) => nn.functional.cross_entropy(o, t), ps => optim.AdamW(ps, 1e-3));
            float loss = 0;
            for (int step = 0; step < 20; step++) loss = pipe.TrainStep(x, y);
            Assert.NotEqual(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode);
            return loss;
        }
        Assert.Equal(Train(1), Train(4), 5);
    }
}

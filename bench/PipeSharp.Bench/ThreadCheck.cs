using PipeSharp.Runtime;
using TorchSharp;

namespace PipeSharp.Bench;

/// <summary>
/// Shows how libtorch's intra-op thread count behaves across OS threads, with torch.get_num_threads() read on
/// each thread: it is per thread once a thread is initialised, but a thread is initialised lazily from the last
/// value set anywhere.
/// </summary>
internal static class ThreadCheck
{
    public static void Run(TextWriter log)
    {
        torch.set_num_threads(1);
        using var helper = new TorchThread("bench check", 1);
        torch.set_num_threads(2);
        int main2 = torch.get_num_threads();
        int helperAfter = helper.Run(torch.get_num_threads);
        torch.set_num_threads(1);
        log.WriteLine($"  main thread set 2 -> main reads {main2}; a helper thread that set 1 earlier still reads {helperAfter} " +
                      $"({(main2 == 2 && helperAfter == 1 ? "per-thread: OK" : "NOT per-thread")})");

        // A fresh thread that calls set_num_threads before its first operation, while another thread changes it.
        int lazy = 0;
        using (var set = new ManualResetEventSlim())
        using (var go = new ManualResetEventSlim())
        {
            var t = new Thread(() =>
            {
                torch.set_num_threads(1);
                set.Set();
                go.Wait();
                lazy = torch.get_num_threads();
            });
            t.Start();
            set.Wait();
            torch.set_num_threads(2);
            go.Set();
            t.Join();
        }
        torch.set_num_threads(1);
        log.WriteLine($"  fresh thread: set 1 before its first op, then main set 2 -> the fresh thread reads {lazy} " +
                      (lazy == 1 ? "(kept)" : "(libtorch initialises a thread lazily from the last value set on ANY thread)"));

        // The same with a PipeSharp worker: RankWorker calls set_num_threads(ThreadsPerStage) first thing on its new thread.
        var options = new PipelineOptions { Ranks = 1, MicroBatches = 1, ThreadsPerRank = 1 };
        int workerThreads = 0;
        var model = TorchSharp.torch.nn.Sequential(("0", TorchSharp.torch.nn.Linear(8, 8)));
        using (var pipe = new Pipeline(model, options, (o, y) => { workerThreads = torch.get_num_threads(); return torch.nn.functional.mse_loss(o, y); },
                   p => torch.optim.SGD(p, 0.01)))
        {
            Thread.Sleep(200); // the worker thread has started and called set_num_threads(1)
            torch.set_num_threads(2);
            using var x = torch.zeros(4, 8);
            pipe.TrainStep(x, x);
        }
        torch.set_num_threads(1);
        log.WriteLine($"  PipeSharp worker (ThreadsPerStage 1), main set 2 before the first TrainStep -> worker reads {workerThreads} " +
                      (workerThreads == 1 ? "(OK)" : "(RankWorker's setting was undone; the benchmark runs a first step right after creating each pipeline)"));
    }
}

using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Schedules;
using static TorchSharp.torch;

namespace PipeSharp.Training;

/// <summary>
/// The costs of F, I and W by which the zero-bubble generators (<c>zb-h1</c>, <c>zb-v</c>) order actions, measured on
/// the model itself: a copy of it (the same shape, untied, made without touching the global random state) runs a few steps of
/// one micro-batch under the runtime with a split backward, on one rank, and its actions' durations are the costs.
/// </summary>
/// <remarks>
/// The generators' default (F = I = W) does not fit a GPT: its input gradient costs more than its forward (the
/// attention's backward has no weights) and its weight gradient less. For the GPT of issue 11 (4 layers, width 192,
/// context 128, 8 micro-batches of 2 sequences) the order made from measured costs (F 3.4, I 3.8, W 2.9 ms per model
/// piece) is predicted to take 169.5 ms of actions against 172.8 ms with equal costs (the bound, the busier rank's
/// work, is 165.8 ms).
/// </remarks>
internal static class ZeroBubbleCosts
{
    /// <summary>True if <paramref name="schedule"/> is a generator that places its actions by costs.</summary>
    public static bool Applies(string schedule) => schedule is "zb-h1" or "zb-v";

    /// <summary>
    /// F, I and W of the whole model on <paramref name="microBatch"/> (token ids): the fastest of 5 measured steps after
    /// 1 warm-up (the least disturbed by whatever else runs on the machine).
    /// </summary>
    public static ActionCosts Measure(GptConfig config, ILanguageModelTask task, Tensor microBatch, Tensor microTarget, int threads)
    {
        using var rng = get_rng_state();
        try
        {
            // Untied: within one stage a tied embedding's weight gradient would need a second walk of the whole graph
            // (Runtime/StageRuntime), which pipelines whose tie spans stages never take (it doubled W here).
            using var copy = Gpt.Create(config with { TieEmbeddings = false });
            // One rank, one micro-batch, the split backward; a learning rate of 0 leaves the copy as it was.
            using var pipe = new Pipeline(copy, new PipelineOptions { Ranks = 1, MicroBatches = 1, Schedule = "zb-h1", ThreadsPerRank = threads },
                task.Loss, ps => optim.SGD(ps, 0.0));
            var f = new List<double>();
            var i = new List<double>();
            var w = new List<double>();
            for (int step = 0; step < 6; step++)
            {
                pipe.TrainStep(microBatch, microTarget);
                if (step == 0) continue;
                foreach (var t in pipe.LastStep!.Timeline)
                {
                    var list = t.Action.Kind switch { ActionKind.Forward => f, ActionKind.InputGrad => i, ActionKind.WeightGrad => w, _ => null };
                    list?.Add(t.End - t.Start);
                }
            }
            double F = Fastest(f), I = Fastest(i), W = Fastest(w);
            return F > 0 && I > 0 && W > 0 ? new ActionCosts(F, I + W, I, W) : ActionCosts.Unit;
        }
        finally
        {
            set_rng_state(rng);
        }
    }

    private static double Fastest(List<double> xs) => xs.Count == 0 ? 0 : xs.Min();
}

namespace PipeSharp.Schedules.Generators;

/// <summary>
/// Zero-bubble schedules (Qi et al., "Zero Bubble Pipeline Parallelism"): the backward is split into the
/// input gradient I, which the previous stage waits for, and the weight gradient W, which nobody waits for and
/// so can fill the time a rank would otherwise sit idle.
/// </summary>
/// <remarks>
/// Both schedules are built by one greedy list scheduler that plays the pipeline forward in time with the given
/// costs: whenever a rank is free it runs, in this order of preference, a ready I (oldest micro-batch first), a
/// ready F if its stage is under both of its caps, else a pending W. Two caps bound memory per stage: the number of
/// micro-batches between F and I (the activations the input gradient needs: the paper's activation memory, kept
/// at 1F1B's bound) and the number between F and W (what the deferred weight gradients still hold). The resulting
/// per-rank order is fixed; at run time only the order matters, so the schedule stays valid (if less tight)
/// whatever the real costs are.
/// </remarks>
internal static class ZeroBubble
{
    /// <summary>
    /// ZB-H1: one stage per rank; stage s holds at most p - s micro-batches awaiting their input gradient (1F1B's
    /// bound) and at most 2p - 1 awaiting their weight gradient; the bubble is a third of 1F1B's when F, I and W
    /// cost the same.
    /// </summary>
    public static Schedule H1(int stages, int microBatches, ActionCosts? costs = null)
    {
        Checks.Counts(stages, microBatches);
        var inputCaps = Enumerable.Range(0, stages).Select(s => stages - s).ToArray();
        var weightCaps = Enumerable.Repeat(2 * stages - 1, stages).ToArray();
        return Greedy("zb-h1", stages, microBatches, Placement.OnePerRank(stages), inputCaps, weightCaps, costs ?? ActionCosts.Unit);
    }

    /// <summary>
    /// ZB-V: two stages (model chunks, each half a rank's share of the model) per rank in a V shape (stage s on
    /// rank s, stage 2p-1-s on rank s). Each stage holds at most p micro-batches until their weight gradient, so a
    /// rank holds at most 2p half-size chunks: the activation memory of 1F1B's first rank. With F = I = W the idle
    /// time is about a sixth of 1F1B's.
    /// </summary>
    public static Schedule V(int ranks, int microBatches, ActionCosts? costs = null)
    {
        Checks.Counts(ranks, microBatches);
        int stages = 2 * ranks;
        var inputCaps = Enumerable.Range(0, stages).Select(s => stages - s).ToArray();
        var weightCaps = Enumerable.Repeat(ranks, stages).ToArray();
        return Greedy("zb-v", stages, microBatches, Placement.VShape(ranks), inputCaps, weightCaps, costs ?? ActionCosts.Unit);
    }

    private static Schedule Greedy(string name, int stages, int m, int[] placement, int[] inputCaps, int[] weightCaps, ActionCosts costs)
    {
        int ranks = placement.Max() + 1;
        var stagesOf = Enumerable.Range(0, ranks).Select(r => Enumerable.Range(0, stages).Where(s => placement[s] == r).ToArray()).ToArray();
        var endF = new double?[stages, m];
        var endI = new double?[stages, m];
        var nextF = new int[stages];
        var nextI = new int[stages];
        var awaitingInput = new int[stages];
        var awaitingWeight = new int[stages];
        var pendingW = Enumerable.Range(0, stages).Select(_ => new Queue<int>()).ToArray();
        var free = new double[ranks];
        var lists = Enumerable.Range(0, ranks).Select(_ => new List<PipelineAction>()).ToArray();
        int remaining = 3 * stages * m;

        double Hop(int from, int to) => placement[from] == placement[to] ? 0 : costs.Communication;

        // When the next I of stage s could start, or null if its inputs are not computed yet.
        double? ReadyI(int s)
        {
            int i = nextI[s];
            if (i >= m || i >= nextF[s]) return null;
            double t = endF[s, i]!.Value;
            if (s == stages - 1) return t;
            return endI[s + 1, i] is { } g ? Math.Max(t, g + Hop(s + 1, s)) : null;
        }

        double? ReadyF(int s)
        {
            int i = nextF[s];
            if (i >= m || awaitingInput[s] >= inputCaps[s] || awaitingWeight[s] >= weightCaps[s]) return null;
            if (s == 0) return 0;
            return endF[s - 1, i] is { } a ? a + Hop(s - 1, s) : null;
        }

        // The choice of rank r if it is free at time now, or null if it has nothing ready then.
        PipelineAction? Choose(int r, double now)
        {
            var i = stagesOf[r].Where(s => ReadyI(s) <= now).OrderBy(s => nextI[s]).ThenByDescending(s => s);
            foreach (var s in i) return PipelineAction.I(s, nextI[s]);
            var f = stagesOf[r].Where(s => ReadyF(s) <= now).OrderBy(s => nextF[s]).ThenByDescending(s => s);
            foreach (var s in f) return PipelineAction.F(s, nextF[s]);
            var w = stagesOf[r].Where(s => pendingW[s].Count > 0).OrderByDescending(s => s);
            foreach (var s in w) return PipelineAction.W(s, pendingW[s].Peek());
            return null;
        }

        bool HasWork(int r) => stagesOf[r].Any(s => nextF[s] < m || nextI[s] < m || pendingW[s].Count > 0);

        // When rank r can next act: now if something is ready, else when its next input is known to arrive.
        double? NextMoment(int r)
        {
            if (Choose(r, free[r]) != null) return free[r];
            var known = stagesOf[r].SelectMany(s => new[] { ReadyI(s), ReadyF(s) }).Where(t => t != null).Select(t => t!.Value);
            return known.Any() ? Math.Max(free[r], known.Min()) : null;
        }

        while (remaining > 0)
        {
            // The rank that can act earliest runs its preferred action (ties: lower rank first).
            int r = -1;
            double when = double.PositiveInfinity;
            for (int x = 0; x < ranks; x++)
            {
                if (!HasWork(x) || NextMoment(x) is not { } t || t >= when) continue;
                r = x;
                when = t;
            }
            if (r < 0) throw new InvalidOperationException($"{name}: the greedy scheduler found no runnable action.");
            free[r] = when;
            var a = Choose(r, when)!.Value;

            double end = free[r] + costs.Of(a.Kind);
            switch (a.Kind)
            {
                case ActionKind.Forward:
                    endF[a.Stage, a.MicroBatch] = end; nextF[a.Stage]++; awaitingInput[a.Stage]++; awaitingWeight[a.Stage]++;
                    break;
                case ActionKind.InputGrad:
                    endI[a.Stage, a.MicroBatch] = end; nextI[a.Stage]++; pendingW[a.Stage].Enqueue(a.MicroBatch); awaitingInput[a.Stage]--;
                    break;
                case ActionKind.WeightGrad:
                    pendingW[a.Stage].Dequeue(); awaitingWeight[a.Stage]--;
                    break;
            }
            lists[r].Add(a);
            free[r] = end;
            remaining--;
        }
        return new Schedule(name, stages, m, placement, lists.Cast<IReadOnlyList<PipelineAction>>().ToList());
    }
}

using PipeSharp.Tracing;

namespace PipeSharp.Runtime;

/// <summary>
/// Decides, after each training step, whether layers should move (<see cref="RebalancingOptions"/>): each rank's busy
/// time is the sum of its stages' (<see cref="StepStatistics.StageBusySeconds"/>: its actions and optimizer step, not
/// its waiting); when the slowest rank is more than the threshold above the mean for the given number of steps in a
/// row, each rank's seconds per unit of layer cost are measured over those steps and the split is computed again with
/// them (<see cref="SpeedAwareSplit.RebalancedSplit"/>). A split is proposed if it is predicted to save at least the
/// minimum gain, and a split the pipeline held before and left at least twice that: two splits within the measurements'
/// noise of each other would otherwise swap back and forth. Its inputs are the step statistics every process has
/// alike, so every process decides alike.
/// </summary>
internal sealed class RebalanceTrigger
{
    private readonly RebalancingOptions _options;
    private readonly double[] _costs;
    private readonly List<double[]> _slowSteps = new();
    private bool _settling = true; // the first step (cold caches, first allocations) is not typical either
    private readonly HashSet<string> _left = new(); // the splits moved away from

    /// <param name="options">The threshold, the number of steps and the minimum gain.</param>
    /// <param name="layerCosts">Each layer's cost (parameter count, or the spec's cost); a cost of zero is taken as a small one, so every rank's speed can be measured.</param>
    public RebalanceTrigger(RebalancingOptions options, IReadOnlyList<double> layerCosts)
    {
        _options = options;
        double floor = 0.01 * (layerCosts.Where(c => c > 0).DefaultIfEmpty(1).Average());
        _costs = layerCosts.Select(c => Math.Max(c, floor)).ToArray();
    }

    /// <summary>The layer costs the speeds are measured against.</summary>
    public IReadOnlyList<double> Costs => _costs;

    /// <summary>
    /// Forgets the slow steps seen so far and skips the next step (the first after a move is not typical); remembers
    /// <paramref name="left"/>, the split moved away from, so that going back to it needs twice the minimum gain.
    /// </summary>
    public void Moved(IReadOnlyList<int> left)
    {
        _left.Add(Key(left));
        _slowSteps.Clear();
        _settling = true;
    }

    /// <summary>The split to move to and its predicted gain (a share of the step time), or null to stay.</summary>
    public (IReadOnlyList<int> Balance, double Gain)? AfterStep(StepStatistics step, IReadOnlyList<int> balance, IReadOnlyList<int> stageToRank, int ranks)
    {
        if (_settling || step.Skipped)
        {
            _settling = false;
            return null;
        }
        var busy = RankBusy(step.StageBusySeconds, stageToRank, ranks);
        if (!(busy.Max() > busy.Average() * (1 + _options.Threshold)))
        {
            _slowSteps.Clear();
            return null;
        }
        _slowSteps.Add(step.StageBusySeconds.ToArray());
        if (_slowSteps.Count < _options.Steps) return null;

        var stageBusy = Enumerable.Range(0, balance.Count).Select(s => _slowSteps.Sum(b => b[s])).ToArray();
        _slowSteps.Clear();
        var measured = RankBusy(stageBusy, stageToRank, ranks);
        var ones = Enumerable.Repeat(1.0, ranks).ToArray();
        var work = SpeedAwareSplit.RankTimes(_costs, balance, stageToRank, ones);
        var secondsPerCost = measured.Select((b, r) => b / work[r]).ToArray();
        var split = SpeedAwareSplit.RebalancedSplit(_costs, stageToRank, secondsPerCost);
        if (split.SequenceEqual(balance)) return null;
        double now = SpeedAwareSplit.RankTimes(_costs, balance, stageToRank, secondsPerCost).Max();
        double then = SpeedAwareSplit.RankTimes(_costs, split, stageToRank, secondsPerCost).Max();
        double gain = now > 0 ? 1 - then / now : 0;
        double needed = _left.Contains(Key(split)) ? 2 * _options.MinimumGain : _options.MinimumGain;
        return gain >= needed ? (split, gain) : null;
    }

    private static string Key(IReadOnlyList<int> balance) => string.Join(",", balance);

    private static double[] RankBusy(IReadOnlyList<double> stageBusy, IReadOnlyList<int> stageToRank, int ranks)
    {
        var busy = new double[ranks];
        for (int s = 0; s < stageBusy.Count; s++) busy[stageToRank[s]] += stageBusy[s];
        return busy;
    }
}

namespace PipeSharp.Cli.Output;

/// <summary>
/// Human-readable output: a header with the split, a line per step (or every <c>logEvery</c> steps), a summary.
/// With a <see cref="ProgressLine"/> (on a terminal) a status line is redrawn after every step.
/// </summary>
internal sealed class TextOutput(TextWriter output, int logEvery, ProgressLine? progress) : ITrainOutput
{
    private int _steps;
    private int _stepWidth = 1;
    private float _firstLoss, _lastLoss;
    private double _secondsAfterFirst;
    private long _samplesAfterFirst;
    private double _firstSamplesPerS;
    private TrainSetup? _setup;

    public void Start(TrainSetup setup)
    {
        _setup = setup;
        _stepWidth = setup.Steps.ToString().Length;
        int small = setup.BatchSize / setup.MicroBatches, large = (setup.BatchSize + setup.MicroBatches - 1) / setup.MicroBatches;
        string sizes = small == large ? $"{small}" : $"{small}-{large}";
        output.WriteLine($"model      {setup.Model}");
        output.WriteLine($"schedule   {setup.Schedule}, {setup.MicroBatches} micro-batches of {sizes} samples (batch {setup.BatchSize})");
        output.WriteLine($"optimizer  {setup.Optimizer}");
        output.WriteLine($"training   {setup.Steps} steps, seed {setup.Seed}" +
                         (setup.ThreadsPerRank is { } t ? $", {t} thread{(t == 1 ? "" : "s")} per rank" : ""));
        int layerWidth = setup.Stages.Max(s => LayerRange(s).Length);
        int deviceWidth = setup.Stages.Max(s => s.Device.Length);
        // With several stages per rank: one line per stage, in model order, naming its rank.
        bool chunks = setup.Stages.Select(s => s.Rank).Distinct().Count() < setup.Stages.Count;
        foreach (var s in setup.Stages)
        {
            string name = chunks ? $"stage {s.Index,-3} rank {s.Rank,-3}" : $"stage {s.Index,-4}";
            output.WriteLine($"{name} layers {LayerRange(s).PadRight(layerWidth)}  {s.Device.PadRight(deviceWidth)}  " +
                             $"{s.Parameters,10:N0} parameters");
        }
        output.WriteLine();
    }

    public void Step(StepReport report)
    {
        _steps = report.Step;
        _lastLoss = report.Loss;
        if (report.Step == 1)
        {
            _firstLoss = report.Loss;
            _firstSamplesPerS = report.SamplesPerS;
        }
        else
        {
            // The first step is left out of the throughput: it includes warm-up (allocation, thread start).
            _secondsAfterFirst += _setup!.BatchSize / report.SamplesPerS;
            _samplesAfterFirst += _setup.BatchSize;
        }

        // Progress first, so the status line redrawn under a step line is up to date.
        progress?.Update(report.Step, report.Loss, MeanSamplesPerS);
        if (report.Step % logEvery == 0 || report.Step == 1 || report.Step == _setup!.Steps || report.Skipped)
        {
            string busy = string.Join(" ", report.StageBusy.Select(b => $"{b * 100,3:F0}%"));
            string line = $"step {report.Step.ToString().PadLeft(_stepWidth)}  loss {report.Loss,8:F4}  " +
                          $"{report.SamplesPerS,10:N0} samples/s  busy {busy}" + (report.Skipped ? "  skipped (non-finite)" : "");
            if (progress is null) output.WriteLine(line);
            else progress.WriteLine(line);
        }
    }

    public void Finish(bool interrupted)
    {
        progress?.Clear();
        if (_steps == 0)
        {
            output.WriteLine(interrupted ? "interrupted before the first step finished." : "no steps run.");
            return;
        }
        string over = _steps switch { 1 => "step 1", 2 => "step 2", _ => $"steps 2-{_steps}" };
        output.WriteLine();
        output.WriteLine((interrupted ? $"interrupted after {_steps} of {_setup!.Steps} steps" : $"done: {_steps} steps") +
                         $"; loss {_firstLoss:F4} -> {_lastLoss:F4} (final); {MeanSamplesPerS:N0} samples/s (mean over {over})");
    }

    private double MeanSamplesPerS => _secondsAfterFirst > 0 ? _samplesAfterFirst / _secondsAfterFirst : _firstSamplesPerS;

    private static string LayerRange(StageInfo s) =>
        s.LayerCount == 1 ? $"{s.FirstLayer}" : $"{s.FirstLayer}-{s.FirstLayer + s.LayerCount - 1}";
}

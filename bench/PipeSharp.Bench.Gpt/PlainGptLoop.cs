using System.Diagnostics;
using PipeSharp.Models;
using PipeSharp.Native;
using PipeSharp.Runtime;
using PipeSharp.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Bench.Speed;

/// <summary>
/// The reference of issue 11: a plain TorchSharp loop doing the work of one <see cref="LanguageModelTrainer"/> step on
/// one device: the same model and batches, the trainer's learning-rate schedule, AdamW with the trainer's parameter
/// groups, the global gradient norm clipped with <c>clip_grad_norm_</c>, the loss read back every step.
/// </summary>
internal sealed class PlainGptLoop : IDisposable
{
    private readonly Sequential _model;
    private readonly optim.Optimizer _optimizer;
    private readonly IReadOnlyList<Parameter> _parameters;
    private readonly ILanguageModelTask _task;
    private readonly GptConfig _config;
    private readonly LanguageModelTrainingOptions _options;
    private readonly LearningRateSchedule _schedule;
    private int _step;

    public PlainGptLoop(GptConfig config, ILanguageModelTask task, LanguageModelTrainingOptions options)
    {
        _config = config;
        _task = task;
        _options = options;
        _schedule = new LearningRateSchedule(options.LearningRate, options.WarmupSteps, options.Steps, options.MinLearningRate);
        manual_seed(options.Seed);
        _model = Gpt.Create(config);
        _parameters = ParameterIdentity.Distinct(_model.parameters()).ToList();
        _optimizer = LanguageModelOptimizer.Create(_parameters, options.LearningRate, options.WeightDecay); // the trainer's optimizer
    }

    /// <summary>Trains <paramref name="steps"/> steps on this thread with <paramref name="threads"/> intra-op threads; tokens/s.</summary>
    public double Measure(int steps, int threads)
    {
        torch.set_num_threads(threads);
        var clock = Stopwatch.StartNew();
        for (int k = 0; k < steps; k++)
        {
            using var scope = NewDisposeScope();
            double lr = _schedule.At(_step);
            foreach (var g in _optimizer.ParamGroups) g.LearningRate = lr;
            var (x, y) = _task.Batch(false, _step, _options.BatchSize, _config.ContextLength, _options.Seed);
            _optimizer.zero_grad();
            var loss = _task.Loss(_model.forward(x), y);
            loss.backward();
            if (_options.MaxGradNorm is { } max) nn.utils.clip_grad_norm_(_parameters, max);
            _optimizer.step();
            _ = loss.item<float>();
            _step++;
        }
        return steps * (double)_options.BatchSize * _config.ContextLength / clock.Elapsed.TotalSeconds;
    }

    public void Dispose()
    {
        _optimizer.Dispose();
        _model.Dispose();
    }
}

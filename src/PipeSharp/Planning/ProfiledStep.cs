using PipeSharp.Runtime;
using PipeSharp.Schedules;
using PipeSharp.Tracing;
using static TorchSharp.torch;

namespace PipeSharp.Planning;

/// <summary>
/// The step a profile measures, ready to run: every layer a stage of its own, all on one rank with the threads asked
/// for, and a batch of two copies of the sample micro-batch under the profile's schedule
/// (<see cref="ProfileRun.Schedule"/>: micro-batch 0 with a full backward, micro-batch 1 with I and W). The profiler
/// times its actions; the speed check times it again later, against the profile's step time.
/// </summary>
internal sealed class ProfiledStep : IDisposable
{
    private readonly Tensor _targets;

    public ProfiledStep(Func<PipelineOptions, Pipeline> create, int layerCount, Tensor input, Tensor target, string device, int threads)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "profile with at least 1 intra-op thread.");
        if (input.dim() == 0 || input.shape[0] < 1)
            throw new ArgumentException("the sample micro-batch needs at least one sample in dimension 0.", nameof(input));
        string file = Path.Combine(Path.GetTempPath(), $"pipesharp-profile-{Environment.ProcessId}-{Guid.NewGuid():N}.schedule");
        ScheduleFile.Save(ProfileRun.Schedule(layerCount), file);
        try
        {
            Pipeline = create(new PipelineOptions
            {
                Balance = Enumerable.Repeat(1, layerCount).ToArray(),
                Schedule = file,
                MicroBatches = 2,
                ThreadsPerRank = threads,
                Devices = [device],
            });
        }
        finally
        {
            File.Delete(file);
        }
        Batch = cat([input, input]);
        _targets = cat([target, target]);
    }

    /// <summary>The profiling pipeline.</summary>
    public Pipeline Pipeline { get; }

    /// <summary>The step's batch: the sample micro-batch twice.</summary>
    public Tensor Batch { get; }

    /// <summary>Runs the step once (its optimizer steps too) and returns its statistics.</summary>
    public StepStatistics Run()
    {
        Pipeline.TrainStep(Batch, _targets);
        return Pipeline.LastStep!;
    }

    public void Dispose()
    {
        Pipeline.Dispose();
        Batch.Dispose();
        _targets.Dispose();
    }
}

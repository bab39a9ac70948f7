using PipeSharp.Devices;
using PipeSharp.Partitioning;
using PipeSharp.Schedules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// What a pipeline will run, worked out from its options before anything starts: the training schedule (validated),
/// the layers of each model piece, and the device of each stage worker.
/// </summary>
internal sealed record PipelinePlan(Schedule Schedule, Schedule ForwardSchedule, IReadOnlyList<int> Balance, IReadOnlyList<Device> RankDevices)
{
    public static PipelinePlan Create(PipelineOptions options, IReadOnlyList<nn.Module> layers)
    {
        if (options.MicroBatches < 1)
            throw new ArgumentOutOfRangeException("microBatches", options.MicroBatches,
                "MicroBatches must be at least 1 (1 means no micro-batching).");
        if (options.ThreadsPerStage is < 1)
            throw new ArgumentOutOfRangeException("threadsPerStage", options.ThreadsPerStage,
                "ThreadsPerStage must be at least 1, or null for the processor count divided by the stage count.");
        CheckMaxGradNorm(options.MaxGradNorm);
        if (options.Stages is < 1)
            throw new ArgumentOutOfRangeException("stages", options.Stages, "The number of stages must be at least 1.");

        var schedule = File.Exists(options.Schedule) ? FromFile(options) : Generate(options, layers.Count);
        ScheduleValidator.Validate(schedule);
        int pieces = schedule.StageCount;
        IReadOnlyList<int> balance = options.Balance != null
            ? Partitioning.Balance.Check(options.Balance, layers.Count)
            : Partitioning.Balance.ByCost(ModelSplitter.ParameterCounts(layers), CheckPieces(pieces, layers.Count, schedule));
        if (balance.Count != pieces)
            throw new ArgumentException(
                $"balance has {balance.Count} entries but schedule '{schedule.Name}' cuts the model into {pieces} pieces " +
                $"({schedule.RankCount} stages x {pieces / schedule.RankCount} chunks): give {pieces} layer counts.", "balance");
        var devices = DeviceResolver.Resolve(options.Devices, schedule.RankCount);
        var forward = ScheduleGenerators.ForwardOnly(pieces, schedule.MicroBatchCount, schedule.StageToRank);
        return new PipelinePlan(schedule, forward, balance, devices);
    }

    /// <summary>Refuses a clipping bound that is not a positive finite number (null: no clipping).</summary>
    public static void CheckMaxGradNorm(double? maxGradNorm)
    {
        // NaN compares false with everything: without this, a NaN or infinite bound would quietly turn clipping off.
        if (maxGradNorm is { } maxNorm && !(maxNorm > 0 && double.IsFinite(maxNorm)))
            throw new ArgumentOutOfRangeException("maxGradNorm", maxNorm,
                $"MaxGradNorm must be a positive finite number (the largest global gradient norm), or null for no clipping; got {maxNorm}.");
    }

    private static int CheckPieces(int pieces, int layerCount, Schedule schedule)
    {
        if (pieces > layerCount)
        {
            int chunks = pieces / schedule.RankCount;
            throw new ArgumentOutOfRangeException("stages", schedule.RankCount,
                $"{schedule.RankCount} stages{(chunks > 1 ? $" x {chunks} chunks" : "")} need {pieces} model pieces but the model has only " +
                $"{layerCount} layers: use at most {layerCount / chunks} stages (each piece needs at least one layer).");
        }
        return pieces;
    }

    private static Schedule Generate(PipelineOptions options, int layerCount)
    {
        int chunks = ScheduleGenerators.ChunksPerRank(options.Schedule, options.Chunks);
        int ranks;
        if (options.Balance != null)
        {
            if (options.Balance.Count % chunks != 0)
                throw new ArgumentException(
                    $"balance has {options.Balance.Count} entries, which is not a multiple of the {chunks} chunks per stage of schedule '{options.Schedule}'.",
                    "balance");
            ranks = options.Balance.Count / chunks;
            if (options.Stages != null && options.Stages != ranks)
                throw new ArgumentException(
                    $"stages is {options.Stages} but balance has {options.Balance.Count} entries ({ranks} stages x {chunks} chunks): " +
                    "give one count per model piece, or leave stages unset.", "stages");
        }
        else
        {
            ranks = options.Stages ?? 1;
            if (ranks * chunks > layerCount)
                throw new ArgumentOutOfRangeException("stages", ranks,
                    $"{ranks} stages{(chunks > 1 ? $" x {chunks} chunks" : "")} but the model has only {layerCount} layers: " +
                    $"use at most {layerCount / chunks} stages (each model piece needs at least one layer).");
        }
        return ScheduleGenerators.Create(options.Schedule, ranks, options.MicroBatches, options.Chunks, options.ScheduleCosts);
    }

    private static Schedule FromFile(PipelineOptions options)
    {
        if (options.Chunks != null)
            throw new ArgumentException(
                $"chunks is set, but schedule file '{options.Schedule}' already fixes the placement of every stage: leave chunks unset.", "chunks");
        var schedule = ScheduleFile.Parse(File.ReadAllText(options.Schedule), options.Schedule);
        if (schedule.MicroBatchCount != options.MicroBatches)
            throw new ArgumentException(
                $"schedule file '{options.Schedule}' is for {schedule.MicroBatchCount} micro-batches but MicroBatches is {options.MicroBatches}: make them equal.",
                "microBatches");
        if (options.Stages != null && options.Stages != schedule.RankCount)
            throw new ArgumentException(
                $"schedule file '{options.Schedule}' has {schedule.RankCount} ranks but stages is {options.Stages}: make them equal or leave stages unset.",
                "stages");
        return schedule;
    }
}

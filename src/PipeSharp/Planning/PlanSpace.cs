using PipeSharp.Devices;
using PipeSharp.Memory;
using PipeSharp.Runtime;
using PipeSharp.Schedules;

namespace PipeSharp.Planning;

/// <summary>
/// The layouts a plan searches, from a checked request: on the CPU, ranks x replicas x threads per rank at most the
/// processors; replicas that split the batch evenly; micro-batch counts that are powers of two dividing each
/// replica's share (up to 16); every schedule (one rank: 1f1b alone, the schedules being the same there) and both
/// recomputations. Settings the request fixes are taken as they are.
/// </summary>
internal static class PlanSpace
{
    public const int MostMicroBatches = 16;

    public static IReadOnlyList<PlanLayout> Layouts(PlanRequest request, int layers)
    {
        int processors = Check(request, layers);
        var layouts = new List<PlanLayout>();
        var schedules = request.Schedule is { } fixedSchedule ? [fixedSchedule] : ScheduleGenerators.Names;
        bool[] recompute = request.Recomputation is { } r ? [!r.IsNone] : [false, true];
        for (int ranks = request.Ranks ?? 1; ranks <= (request.Ranks ?? Math.Min(processors, layers)); ranks++)
        for (int replicas = request.Replicas ?? 1; replicas <= (request.Replicas ?? processors / ranks); replicas++)
        {
            if (request.BatchSize % replicas != 0) continue;
            int perReplica = request.BatchSize / replicas;
            for (int threads = request.ThreadsPerRank ?? 1; threads <= (request.ThreadsPerRank ?? processors / (ranks * replicas)); threads++)
            {
                if (ranks * replicas * threads > processors) continue;
                foreach (int m in MicroBatchCounts(request, perReplica))
                foreach (var schedule in schedules)
                {
                    if (ranks == 1 && request.Schedule is null && schedule != "1f1b") continue;
                    foreach (bool full in recompute)
                    {
                        var layout = new PlanLayout(ranks, replicas, m, schedule, full, threads);
                        if (layout.Stages <= layers) layouts.Add(layout);
                    }
                }
            }
        }
        if (layouts.Count == 0)
            throw new ArgumentException(
                $"no layout to search: with {processors} processor(s), {layers} layers and a batch of {request.BatchSize}, the fixed settings " +
                $"(Ranks {request.Ranks?.ToString() ?? "-"}, Replicas {request.Replicas?.ToString() ?? "-"}, ThreadsPerRank {request.ThreadsPerRank?.ToString() ?? "-"}, " +
                $"MicroBatches {request.MicroBatches?.ToString() ?? "-"}, Schedule {request.Schedule ?? "-"}) leave nothing: " +
                "ranks x replicas x threads must be at most the processors, replicas must divide the batch, and each stage needs a layer.", "request");
        return layouts;
    }

    private static IEnumerable<int> MicroBatchCounts(PlanRequest request, int perReplica)
    {
        if (request.MicroBatches is { } m)
        {
            if (perReplica % m == 0) yield return m;
            yield break;
        }
        for (int k = 1; k <= Math.Min(MostMicroBatches, perReplica); k *= 2)
            if (perReplica % k == 0) yield return k;
    }

    // Refuses bad settings, naming them; returns the processors to share.
    private static int Check(PlanRequest request, int layers)
    {
        if (request.BatchSize < 1)
            throw new ArgumentOutOfRangeException("batchSize", request.BatchSize, "BatchSize (--batch-size) must be at least 1 sample.");
        if (request.TokensPerSample <= 0 || !double.IsFinite(request.TokensPerSample))
            throw new ArgumentOutOfRangeException("tokensPerSample", request.TokensPerSample, "TokensPerSample must be a positive number.");
        if (request.ProfileRepeats < 1)
            throw new ArgumentOutOfRangeException("profileRepeats", request.ProfileRepeats, "ProfileRepeats must be at least 1.");
        foreach (var name in request.Devices ?? [])
        {
            var device = DeviceResolver.Parse(name); // an unknown device or one this machine lacks: its own message
            if (device.type != TorchSharp.DeviceType.CPU)
                throw new ArgumentException(
                    $"devices: '{name}' is not the CPU; the planner profiles and searches CPU layouts only for now: give --devices cpu " +
                    "(or leave it out), or choose the layout by hand with --ranks, --devices and --schedule.", "devices");
        }
        int processors = request.Processors ?? Environment.ProcessorCount;
        if (processors < 1)
            throw new ArgumentOutOfRangeException("processors", processors, "Processors must be at least 1.");
        if (request.MemoryPerDevice is { } budgets)
        {
            if (budgets.Count == 0 || budgets.Any(b => b < 1))
                throw new ArgumentException("MemoryPerDevice (--memory-per-device) needs one size or one per rank, each at least 1 byte, e.g. 2GB.", "memoryPerDevice");
            if (budgets.Count > 1 && request.Ranks is { } fixedRanks && fixedRanks != budgets.Count)
                throw new ArgumentException(
                    $"MemoryPerDevice (--memory-per-device) has {budgets.Count} budgets but Ranks (--ranks) is {fixedRanks}: give one budget for " +
                    $"all ranks or {fixedRanks}.", "memoryPerDevice");
        }
        if (request.Ranks is { } ranks && (ranks < 1 || ranks > Math.Min(layers, processors)))
            throw new ArgumentOutOfRangeException("ranks", ranks,
                $"Ranks (--ranks) is {ranks}, but between 1 and {Math.Min(layers, processors)} can run here ({layers} layers, {processors} processor(s)).");
        if (request.Replicas is < 1) throw new ArgumentOutOfRangeException("replicas", request.Replicas, "Replicas (--replicas) must be at least 1.");
        if (request.ThreadsPerRank is < 1) throw new ArgumentOutOfRangeException("threadsPerRank", request.ThreadsPerRank, "ThreadsPerRank (--threads-per-rank) must be at least 1.");
        if (request.MicroBatches is < 1) throw new ArgumentOutOfRangeException("microBatches", request.MicroBatches, "MicroBatches (--microbatches) must be at least 1.");
        if (request.Schedule is { } s && !ScheduleGenerators.Names.Contains(s))
            throw new ArgumentException($"Schedule (--schedule) '{s}': the planner searches the generated schedules {string.Join(", ", ScheduleGenerators.Names)}; give one of them or leave it unset.", "schedule");
        if (request.Recomputation is { } r && !r.IsNone && !r.Equals(Recomputation.Full))
            throw new ArgumentException($"Recomputation (--recompute) {r}: the planner tries none and full; give one of them or leave it unset.", "recomputation");
        return processors;
    }
}

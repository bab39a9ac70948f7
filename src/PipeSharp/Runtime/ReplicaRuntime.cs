using PipeSharp.Transport;

namespace PipeSharp.Runtime;

/// <summary>
/// One copy of the pipeline (a data-parallel replica) as far as this process holds it: the stages of its ranks that
/// run here (the others are null), its transport and its shared-parameter copies.
/// </summary>
internal sealed class ReplicaRuntime : IDisposable
{
    public ReplicaRuntime(int index, StageRuntime?[] stages, SharedParameters shared, ITransport transport, ActionRunner runner)
    {
        Index = index;
        Stages = stages;
        Shared = shared;
        Transport = transport;
        Runner = runner;
    }

    public int Index { get; }

    /// <summary>All stages of the model, in order; null where the stage runs in another process.</summary>
    public StageRuntime?[] Stages { get; }

    /// <summary>The copies of shared parameters held here (regrouped when layers move).</summary>
    public SharedParameters Shared { get; set; }
    public ITransport Transport { get; }
    public ActionRunner Runner { get; }

    /// <summary>The stages held here.</summary>
    public IEnumerable<StageRuntime> Local => Stages.Where(s => s != null)!;

    /// <summary>The stages of pipeline rank <paramref name="rank"/> held here.</summary>
    public IEnumerable<StageRuntime> StagesOf(int rank) => Local.Where(s => s.Rank == rank);

    public void Dispose()
    {
        foreach (var s in Local) s.Dispose();
        Transport.Dispose();
    }
}

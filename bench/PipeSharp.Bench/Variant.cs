namespace PipeSharp.Bench;

/// <summary>One way of training the workload, measured in samples per second.</summary>
internal abstract class Variant(string key, string description) : IDisposable
{
    /// <summary>Short label, e.g. <c>a</c>.</summary>
    public string Key { get; } = key;

    /// <summary>One line for the table.</summary>
    public string Description { get; } = description;

    /// <summary>Samples one step trains.</summary>
    public virtual int SamplesPerStep => Workload.Batch;

    /// <summary>
    /// Factor applied to the measured throughput: 1 for real training; the non-bubble share for a ceiling
    /// that measures work without the pipeline's fill and drain.
    /// </summary>
    public virtual double Scale => 1.0;

    /// <summary>Untimed, on the main thread, before each measurement (e.g. sets the main thread's thread count).</summary>
    public virtual void Prepare() { }

    /// <summary>Runs <paramref name="steps"/> full training steps; the harness times this call.</summary>
    public abstract void Run(int steps);

    /// <summary>The loss of the last step, to check that training does something sensible.</summary>
    public abstract float LastLoss { get; }

    public virtual void Dispose() { }
}

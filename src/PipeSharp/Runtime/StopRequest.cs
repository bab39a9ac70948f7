namespace PipeSharp.Runtime;

/// <summary>
/// A request to stop training after a step that every rank agrees on, e.g. from a signal handler
/// (<c>SIGINT</c>, <c>SIGTERM</c>). Give it to a pipeline (<see cref="PipelineOptions.Stop"/>) and call
/// <see cref="Request"/> from any thread, in any process of the job: each <see cref="Pipeline.TrainStep(TorchSharp.torch.Tensor, TorchSharp.torch.Tensor, System.Threading.CancellationToken)"/> combines every
/// rank's request in an all-reduce it makes anyway (the loss's), so all ranks learn of a stop in the same step, finish
/// that step, and find <see cref="Agreed"/> set when it returns. Stopping there (and saving a checkpoint) leaves every
/// rank at the same step. Unlike a cancelled step, an agreed stop does not break a pipeline across processes.
/// </summary>
/// <remarks>
/// A request made while a step runs is usually taken up by that step, one made late in it (after its loss is summed)
/// by the next. A request is final: it cannot be withdrawn, and <see cref="Agreed"/>, once set, stays set.
/// <c>LanguageModelTrainer.Run</c> stops by itself when it is agreed.
/// </remarks>
/// <example>
/// <code>
/// var stop = new StopRequest();
/// using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Request(143); });
/// using var pipe = new Pipeline(model, options with { Stop = stop }, loss, optimizer);
/// for (int step = 1; step &lt;= steps &amp;&amp; stop.Agreed is null; step++) pipe.TrainStep(input, target);
/// </code>
/// </example>
public sealed class StopRequest
{
    private int _requested;
    private volatile int _agreed;

    /// <summary>
    /// Asks every rank to stop after the current (or next) step. Safe to call from any thread, more than once.
    /// </summary>
    /// <param name="code">
    /// Why, as a positive number of the caller's choice (the command line passes the exit code: 130 for SIGINT, 143 for
    /// SIGTERM). When ranks ask with different codes in the same step, all agree on the largest.
    /// </param>
    public void Request(int code = 1)
    {
        if (code <= 0) throw new ArgumentOutOfRangeException(nameof(code), code, "a stop code must be positive.");
        int seen = Volatile.Read(ref _requested);
        while (code > seen)
        {
            int previous = Interlocked.CompareExchange(ref _requested, code, seen);
            if (previous == seen) return;
            seen = previous;
        }
    }

    /// <summary>The code this process asked to stop with (the largest, if it asked more than once); null if it has not.</summary>
    public int? Requested => Volatile.Read(ref _requested) is var c and > 0 ? c : null;

    /// <summary>
    /// Set at the end of the step in which the ranks learnt of a request: the code every rank stops with (the largest
    /// requested in that step, the same on every rank). Null until then.
    /// </summary>
    public int? Agreed => _agreed > 0 ? _agreed : null;

    /// <summary>This process's request as a number for the step's all-reduce (0: none).</summary>
    internal int Code => Volatile.Read(ref _requested);

    /// <summary>Records the code the ranks agreed on (the first agreement stays).</summary>
    internal void Agree(int code)
    {
        if (code > 0 && _agreed == 0) _agreed = code;
    }
}

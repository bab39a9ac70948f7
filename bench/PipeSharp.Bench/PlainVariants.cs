using PipeSharp.Partitioning;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Bench;

/// <summary>
/// (a), (b): the plain TorchSharp training loop on the main thread with a given intra-op thread count: zero_grad,
/// forward, loss, backward, SGD step, each step in a dispose scope. With <c>microBatches</c> &gt; 1 the batch is run as
/// that many slices with gradient accumulation (one thread, no pipeline): the cost of micro-batching alone.
/// </summary>
internal sealed class PlainLoop : Variant
{
    private readonly Workload _data;
    private readonly int _threads;
    private readonly TorchSharp.Modules.Sequential _model;
    private readonly optim.Optimizer _optimizer;
    private readonly Tensor[] _inputs, _targets;
    private float _lastLoss = float.NaN;

    public PlainLoop(string key, string description, Workload data, int threads, int microBatches = 1)
        : base(key, description)
    {
        _data = data;
        _threads = threads;
        _model = Workload.CreateModel();
        _optimizer = Workload.CreateOptimizer(_model.parameters());
        _inputs = microBatches == 1 ? [data.Input] : data.Input.tensor_split(microBatches, 0);
        _targets = microBatches == 1 ? [data.Target] : data.Target.tensor_split(microBatches, 0);
    }

    public override float LastLoss => _lastLoss;

    /// <summary>Sets the main thread's intra-op thread count (libtorch keeps it per thread).</summary>
    public override void Prepare()
    {
        torch.set_num_threads(_threads);
        int actual = torch.get_num_threads();
        if (actual != _threads)
            throw new InvalidOperationException($"({Key}) the main thread has {actual} intra-op threads, wanted {_threads}.");
    }

    public override void Run(int steps)
    {
        int m = _inputs.Length;
        for (int s = 0; s < steps; s++)
        {
            using var scope = torch.NewDisposeScope();
            _optimizer.zero_grad();
            float loss = 0;
            for (int i = 0; i < m; i++)
            {
                using var mb = torch.NewDisposeScope();
                var output = _model.forward(_inputs[i]);
                var l = Workload.Loss(output, _targets[i]);
                if (m > 1) l = l.mul(1.0 / m);
                l.backward();
                loss += l.item<float>();
            }
            _optimizer.step();
            _lastLoss = loss;
        }
    }

    public override void Dispose()
    {
        _optimizer.Dispose();
        _model.Dispose();
        if (_inputs.Length > 1) foreach (var t in _inputs.Concat(_targets)) t.Dispose();
    }
}

/// <summary>Per-micro-batch forward and backward times and the optimizer step time of one thread, in seconds.</summary>
internal sealed class HalfTimes
{
    public List<double> Forward { get; } = new();
    public List<double> Backward { get; } = new();
    public List<double> Optimizer { get; } = new();
    public double Total => Forward.Sum() + Backward.Sum() + Optimizer.Sum();
}

/// <summary>
/// (e): the ceiling for the 2-stage pipeline. Two plain threads with one intra-op thread each; thread 0 trains
/// layers 0-1, thread 1 layers 2-3, each over 8 micro-batches of 32 rows, forward then backward, then an SGD step,
/// with no coordination at all: thread 0 back-propagates a fixed random output gradient, thread 1 gets random
/// inputs of the right shape (a leaf that requires grad, like a pipeline stage's received activation) and computes
/// its own MSE loss. It does exactly the compute of the pipeline's two stages, with no waiting and no hand-offs.
/// Throughput is 256 samples per completed step of the pair, times the 1F1B non-bubble share m/(m+p-1) = 8/9.
/// </summary>
internal sealed class IndependentHalves : Variant
{
    private readonly Half[] _halves;
    private float _lastLoss = float.NaN;

    public IndependentHalves(string key, string description, Workload data) : base(key, description)
    {
        var layers = ModelSplitter.Layers(Workload.CreateModel());
        var modules = ModelSplitter.Split(layers, [Workload.Layers / 2, Workload.Layers / 2]);
        var g = new Generator(99);
        int m = Workload.MicroBatches;
        long rows = Workload.Batch / m;
        _halves =
        [
            new Half(modules[0], new TorchThread("bench half 0", 1), isLast: false,
                inputs: data.Input.tensor_split(m, 0),
                others: Enumerable.Range(0, m).Select(_ => torch.randn([rows, Workload.Width], generator: g).mul_(1e-3)).ToArray()),
            new Half(modules[1], new TorchThread("bench half 1", 1), isLast: true,
                inputs: Enumerable.Range(0, m).Select(_ => torch.randn([rows, Workload.Width], generator: g)).ToArray(),
                others: data.Target.tensor_split(m, 0)),
        ];
    }

    public override double Scale => (double)Workload.MicroBatches / (Workload.MicroBatches + Workload.Stages - 1);

    public override float LastLoss => _lastLoss;

    /// <summary>torch.get_num_threads() on each of the two threads.</summary>
    public IEnumerable<int> ThreadCounts => _halves.Select(h => h.Thread.IntraOpThreads);

    public override void Run(int steps) => Run(steps, null, null);

    /// <summary>
    /// Runs <paramref name="steps"/> steps and adds every forward, backward and optimizer step to <paramref name="into"/>;
    /// <paramref name="only"/> runs one half alone (the other thread idle) to show what sharing the CPU costs.
    /// </summary>
    public void Trace(int steps, HalfTimes[] into, int? only = null) => Run(steps, into, only);

    private void Run(int steps, HalfTimes[]? times, int? only)
    {
        var jobs = Enumerable.Range(0, _halves.Length)
            .Where(h => only is null || only == h)
            .Select(h => _halves[h].Thread.Run(() => _halves[h].Steps(steps, times?[h])))
            .ToArray();
        Task.WaitAll(jobs);
        _lastLoss = _halves[^1].LastLoss;
    }

    public override void Dispose()
    {
        foreach (var h in _halves) h.Dispose();
    }

    private sealed class Half(StageModule module, TorchThread thread, bool isLast, Tensor[] inputs, Tensor[] others) : IDisposable
    {
        private readonly optim.Optimizer _optimizer = Workload.CreateOptimizer(module.parameters());

        public TorchThread Thread { get; } = thread;
        public float LastLoss { get; private set; } = float.NaN;

        public void Steps(int steps, HalfTimes? times)
        {
            int m = inputs.Length;
            for (int s = 0; s < steps; s++)
            {
                using var scope = torch.NewDisposeScope();
                _optimizer.zero_grad();
                float loss = 0;
                for (int i = 0; i < m; i++)
                {
                    using var mb = torch.NewDisposeScope();
                    long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
                    var input = isLast ? inputs[i].detach().requires_grad_(true) : inputs[i];
                    var output = module.forward(input);
                    Tensor root = output;
                    if (isLast)
                    {
                        root = Workload.Loss(output, others[i]).mul(1.0 / m);
                        loss += root.item<float>();
                    }
                    long t1 = System.Diagnostics.Stopwatch.GetTimestamp();
                    if (isLast) root.backward();
                    else root.backward([others[i]]);
                    long t2 = System.Diagnostics.Stopwatch.GetTimestamp();
                    times?.Forward.Add(Seconds(t0, t1));
                    times?.Backward.Add(Seconds(t1, t2));
                }
                long t3 = System.Diagnostics.Stopwatch.GetTimestamp();
                _optimizer.step();
                times?.Optimizer.Add(Seconds(t3, System.Diagnostics.Stopwatch.GetTimestamp()));
                LastLoss = loss;
            }
        }

        private static double Seconds(long from, long to) => (to - from) / (double)System.Diagnostics.Stopwatch.Frequency;

        public void Dispose()
        {
            Thread.Dispose();
            _optimizer.Dispose();
            module.Dispose();
            foreach (var t in inputs.Concat(others)) t.Dispose();
        }
    }
}

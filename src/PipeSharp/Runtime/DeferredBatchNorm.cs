using System.Collections.Concurrent;
using PipeSharp.Randomness;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// <c>PipelineOptions.DeferredBatchNorm</c>: the running statistics of every BatchNorm of the stages held here
/// are left alone by the micro-batches' forwards (each forward still normalises by its micro-batch's statistics); the
/// forwards' per-channel sample counts, sums and sums of squares are kept per micro-batch (keyed by its first sample, so
/// a recomputed forward replaces its first record), summed over the micro-batches of every replica, and applied once
/// per step as PyTorch would apply one forward of the whole batch: the mean, the unbiased variance, the momentum (or
/// the cumulative average without one) and <c>num_batches_tracked</c> + 1.
/// </summary>
internal sealed class DeferredBatchNorm : IDisposable
{
    private readonly List<Tracked>[] _byStage; // the tracked layers of each stage, of every local replica
    private readonly List<Tracked> _all = new();

    public DeferredBatchNorm(IReadOnlyList<ReplicaRuntime> replicas, int stageCount)
    {
        _byStage = Enumerable.Range(0, stageCount).Select(_ => new List<Tracked>()).ToArray();
        foreach (var replica in replicas)
            foreach (var stage in replica.Local)
            {
                int order = 0;
                foreach (var module in stage.Module.modules())
                {
                    if (module is not (BatchNorm1d or BatchNorm2d or BatchNorm3d)) continue;
                    var bn = (nn.Module<Tensor, Tensor>)module;
                    if (Buffer(bn, "running_mean") is null) continue; // track_running_stats = false: nothing to defer
                    var t = new Tracked(replica.Index, stage.Module.Index, order++, bn);
                    _byStage[stage.Module.Index].Add(t);
                    _all.Add(t);
                }
            }
    }

    /// <summary>Forgets what the forwards of an earlier (possibly failed) step recorded.</summary>
    public void Begin()
    {
        foreach (var t in _all) t.Records.Clear();
    }

    /// <summary>
    /// After the step's forwards, on the caller's thread: sums every layer's records over micro-batches and replicas
    /// (across processes too, with <paramref name="sumOverProcesses"/>) and updates its running statistics once.
    /// </summary>
    public void Commit(Func<double[], double[]> sumOverProcesses)
    {
        int stages = _byStage.Length;
        // Block sizes per stage (from one replica: each stage of replica 0 is held by exactly one process).
        var sizes = new double[stages];
        for (int s = 0; s < stages; s++)
            sizes[s] = _byStage[s].Where(t => t.Replica == _byStage[s].Min(u => u.Replica)).Sum(t => 1 + 2 * t.Channels);
        bool anyReplicaZero = _all.Any(t => t.Replica == 0);
        if (!anyReplicaZero) Array.Clear(sizes);
        sizes = sumOverProcesses(sizes);
        var offsets = new long[stages + 1];
        for (int s = 0; s < stages; s++) offsets[s + 1] = offsets[s] + (long)sizes[s];
        if (offsets[stages] == 0) return;

        var sums = new double[offsets[stages]];
        foreach (var t in _all) t.AddTo(sums, offsets[t.Stage] + t.OffsetInStage(_byStage[t.Stage]));
        sums = sumOverProcesses(sums);
        foreach (var t in _all) t.Apply(sums, offsets[t.Stage] + t.OffsetInStage(_byStage[t.Stage]));
    }

    public void Dispose()
    {
        foreach (var t in _all) t.Dispose();
    }

    internal static Tensor? Buffer(nn.Module module, string name) =>
        module.named_buffers(recurse: false).Where(b => b.name == name).Select(b => b.buffer).FirstOrDefault();

    private sealed class Tracked : IDisposable
    {
        private readonly nn.Module<Tensor, Tensor> _module;
        private readonly Action _removeHooks;
        private readonly double? _momentum;
        private Tensor? _count; // num_batches_tracked before the current forward, put back after it
        private bool _inForward;

        public Tracked(int replica, int stage, int order, nn.Module<Tensor, Tensor> module)
        {
            Replica = replica;
            Stage = stage;
            Order = order;
            _module = module;
            Channels = Buffer(module, "running_mean")!.shape[0];
            _momentum = Momentum;
            var pre = module.register_forward_pre_hook((m, input) => { Before(input); return input; });
            var post = module.register_forward_hook((m, input, output) => { After(); return output; });
            _removeHooks = () => { pre.remove(); post.remove(); };
        }

        private double? Momentum
        {
            get => _module switch { BatchNorm1d b => b.momentum, BatchNorm2d b => b.momentum, BatchNorm3d b => b.momentum, _ => null };
            set
            {
                switch (_module)
                {
                    case BatchNorm1d b: b.momentum = value; break;
                    case BatchNorm2d b: b.momentum = value; break;
                    case BatchNorm3d b: b.momentum = value; break;
                }
            }
        }

        public int Replica { get; }
        public int Stage { get; }
        public int Order { get; }
        public long Channels { get; }

        /// <summary>Per micro-batch (by first sample): sample count per channel, sums and sums of squares of x - running mean.</summary>
        public ConcurrentDictionary<long, (double Count, double[] Sum, double[] Squares)> Records { get; } = new();

        public long OffsetInStage(List<Tracked> stage) =>
            stage.Where(t => t.Replica == Replica && t.Order < Order).Sum(t => 1 + 2 * t.Channels);

        private void Before(Tensor input)
        {
            if (!_module.training) return;
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            var mean = Buffer(_module, "running_mean")!;
            // Momentum 0 leaves the running mean and variance as they are (not restored in place afterwards: the
            // forward's graph holds them), and num_batches_tracked is put back after the forward.
            Momentum = 0;
            _inForward = true;
            _count = Buffer(_module, "num_batches_tracked")?.clone().DetachFromDisposeScope();
            var x = input.detach().to(ScalarType.Float64);
            var shape = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
            shape[1] = Channels;
            var d = x - mean.to(ScalarType.Float64).to(x.device).view(shape);
            var dims = Enumerable.Range(0, (int)x.dim()).Where(i => i != 1).Select(i => (long)i).ToArray();
            double count = x.numel() / (double)Channels;
            var sum = d.sum(dims).cpu().data<double>().ToArray();
            var squares = (d * d).sum(dims).cpu().data<double>().ToArray();
            long first = DropoutContext.Current?.FirstSample ?? 0;
            Records[first] = (count, sum, squares); // a recomputed forward replaces its first record
        }

        private void After()
        {
            if (!_inForward) return;
            _inForward = false;
            Momentum = _momentum;
            using var noGrad = torch.no_grad();
            if (_count is not null) Buffer(_module, "num_batches_tracked")?.copy_(_count);
            DisposeSaved();
        }

        public void AddTo(double[] sums, long offset)
        {
            foreach (var (count, sum, squares) in Records.Values)
            {
                sums[offset] += count;
                for (long c = 0; c < Channels; c++)
                {
                    sums[offset + 1 + c] += sum[c];
                    sums[offset + 1 + Channels + c] += squares[c];
                }
            }
        }

        public void Apply(double[] sums, long offset)
        {
            double n = sums[offset];
            if (n == 0) return; // no training forward went through it this step
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            var runningMean = Buffer(_module, "running_mean")!;
            var runningVar = Buffer(_module, "running_var")!;
            var tracked = Buffer(_module, "num_batches_tracked");
            var shift = runningMean.cpu().to(ScalarType.Float64).data<double>().ToArray();
            var oldVar = runningVar.cpu().to(ScalarType.Float64).data<double>().ToArray();
            long batches = (tracked?.cpu().item<long>() ?? 0) + 1;
            double factor = _momentum ?? 1.0 / batches; // PyTorch: momentum, or the cumulative average without one
            var newMean = new double[Channels];
            var newVar = new double[Channels];
            for (long c = 0; c < Channels; c++)
            {
                double m = sums[offset + 1 + c] / n; // mean of x - shift
                double biased = Math.Max(0, sums[offset + 1 + Channels + c] / n - m * m);
                double unbiased = n > 1 ? biased * n / (n - 1) : biased;
                newMean[c] = (1 - factor) * shift[c] + factor * (shift[c] + m);
                newVar[c] = (1 - factor) * oldVar[c] + factor * unbiased;
            }
            runningMean.copy_(torch.tensor(newMean).to(runningMean.dtype));
            runningVar.copy_(torch.tensor(newVar).to(runningVar.dtype));
            if (tracked is not null)
            {
                using var one = 1L.ToScalar(); // explicit: see Native/CollectionPause
                tracked.add_(one);
            }
        }

        private void DisposeSaved()
        {
            _count?.Dispose();
            _count = null;
        }

        public void Dispose()
        {
            _removeHooks();
            DisposeSaved();
        }
    }
}

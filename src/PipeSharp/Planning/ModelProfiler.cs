using PipeSharp.Construction;
using PipeSharp.Devices;
using PipeSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Planning;

/// <summary>
/// Measures what each layer of a model costs on one device with a given number of intra-op threads, for one
/// micro-batch: the seconds of F, B, I and W as the pipeline runtime runs them (the last layer's forward with the
/// loss), the activation bytes a training forward keeps, the output, parameter and optimizer-state bytes, and the
/// optimizer step's seconds. With a <see cref="ProfileCache"/> a profile already measured is read back and nothing
/// runs. See docs/planning.md.
/// </summary>
/// <remarks>
/// Every layer runs as a stage of its own on one rank (one worker thread with <c>threads</c> intra-op threads): a
/// warm-up step of two micro-batches, then <c>repeats</c> measured steps, each timing micro-batch 0 with a full
/// backward and micro-batch 1 with a split one (I then W); each figure is the median over the measured steps. The
/// optimizer steps as in training (its time is part of the profile); a model given as layers gets its values back
/// afterwards, a spec is built for the profile alone. The global random state is kept.
/// </remarks>
public static class ModelProfiler
{
    /// <summary>Profiles a model given as a spec (each layer built once, on <paramref name="device"/>).</summary>
    /// <param name="model">The model.</param>
    /// <param name="sampleInput">One micro-batch of input (its size in dimension 0 is the micro-batch's samples).</param>
    /// <param name="sampleTarget">Its targets, for the loss.</param>
    /// <param name="loss">The loss of a micro-batch, as the pipeline takes it.</param>
    /// <param name="optimizer">Makes a stage's optimizer, as the pipeline takes it (its state's size is counted).</param>
    /// <param name="threads">Intra-op threads of the measuring worker.</param>
    /// <param name="device">The device, e.g. <c>cpu</c> or <c>cuda:0</c>.</param>
    /// <param name="repeats">Measured steps after the warm-up (at least 1).</param>
    /// <param name="cache">Where profiles are kept (null: always measure).</param>
    /// <exception cref="ArgumentException">A bad device, thread count or sample.</exception>
    /// <exception cref="InvalidDataException">The cached file of this profile cannot be read (the message says how to fix it).</exception>
    public static ModelProfile Profile(ModelSpec model, Tensor sampleInput, Tensor sampleTarget, Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer, int threads = 1, string device = "cpu", int repeats = 3,
        ProfileCache? cache = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        string key = KeyOf(model, sampleInput, threads, device);
        return Measure(key, cache, () => ProfileRun.Measure(o => new Pipeline(model, o, loss, optimizer), model.Layers.Count,
            sampleInput, sampleTarget, device, threads, repeats, key));
    }

    /// <summary>Profiles a model given as its layers, in order (e.g. the entries of a Sequential); see the other overload.</summary>
    public static ModelProfile Profile(IReadOnlyList<nn.Module<Tensor, Tensor>> layers, Tensor sampleInput, Tensor sampleTarget,
        Func<Tensor, Tensor, Tensor> loss, Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer, int threads = 1,
        string device = "cpu", int repeats = 3, ProfileCache? cache = null)
    {
        ArgumentNullException.ThrowIfNull(layers);
        string key = KeyOf(layers, sampleInput, threads, device);
        return Measure(key, cache, () =>
        {
            // The pipeline trains these layers in place: their values (and buffers) are put back afterwards.
            var saved = layers.Select(l => l.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone())).ToList();
            try
            {
                return ProfileRun.Measure(o => new Pipeline(layers, o, loss, optimizer), layers.Count, sampleInput, sampleTarget, device, threads, repeats, key);
            }
            finally
            {
                using var noGrad = no_grad();
                for (int i = 0; i < layers.Count; i++)
                {
                    foreach (var (name, value) in layers[i].state_dict()) value.copy_(saved[i][name]);
                    foreach (var t in saved[i].Values) t.Dispose();
                    layers[i].zero_grad();
                }
            }
        });
    }

    /// <summary>
    /// How many times as long <paramref name="profile"/>'s step takes now as when it was measured: the profiled step of
    /// <paramref name="model"/> runs again (a warm-up and <paramref name="steps"/> steps, the median against
    /// <see cref="ModelProfile.StepSeconds"/>); 1 for a profile that did not record its step.
    /// </summary>
    internal static double SpeedFactor(ModelSpec model, Tensor sampleInput, Tensor sampleTarget, Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer, ModelProfile profile, int steps)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(profile);
        if (profile.StepSeconds <= 0 || steps < 1) return 1;
        double now = ProfileRun.StepSecondsNow(o => new Pipeline(model, o, loss, optimizer), model.Layers.Count, sampleInput, sampleTarget,
            profile.Device, profile.Threads, steps);
        return now / profile.StepSeconds;
    }

    /// <summary>The step <paramref name="profile"/> measured, ready to run again (for the speed check, and a test that times the machine beside a run).</summary>
    internal static ProfiledStep OpenProfiledStep(ModelSpec model, Tensor sampleInput, Tensor sampleTarget, Func<Tensor, Tensor, Tensor> loss,
        Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer, ModelProfile profile) =>
        new(o => new Pipeline(model, o, loss, optimizer), model.Layers.Count, sampleInput, sampleTarget, profile.Device, profile.Threads);

    /// <summary>The cache key of a spec's profile (each layer is built once, alone, to read its parameters' shapes).</summary>
    public static string KeyOf(ModelSpec model, Tensor sampleInput, int threads, string device = "cpu")
    {
        ArgumentNullException.ThrowIfNull(model);
        Check(sampleInput, threads, device);
        var layers = new List<nn.Module>();
        try
        {
            for (int i = 0; i < model.Layers.Count; i++) layers.Add(model.BuildLayer(i));
            return ProfileKey.Hash(ProfileKey.Describe(layers, sampleInput, device, threads));
        }
        finally
        {
            foreach (var l in layers) l.Dispose();
        }
    }

    /// <summary>The cache key of a profile of <paramref name="layers"/>.</summary>
    public static string KeyOf(IReadOnlyList<nn.Module<Tensor, Tensor>> layers, Tensor sampleInput, int threads, string device = "cpu")
    {
        ArgumentNullException.ThrowIfNull(layers);
        Check(sampleInput, threads, device);
        return ProfileKey.Hash(ProfileKey.Describe(layers, sampleInput, device, threads));
    }

    private static void Check(Tensor sampleInput, int threads, string device)
    {
        ArgumentNullException.ThrowIfNull(sampleInput);
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "threads: profile with at least 1 intra-op thread.");
        DeviceResolver.Parse(device ?? throw new ArgumentNullException(nameof(device)));
    }

    private static ModelProfile Measure(string key, ProfileCache? cache, Func<ModelProfile> measure) =>
        cache is null ? measure() : cache.GetOrMeasure(key, measure);
}

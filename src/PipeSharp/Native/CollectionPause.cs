using System.Runtime;

namespace PipeSharp.Native;

/// <summary>
/// Holds garbage collections off while several threads run TorchSharp code that converts numbers to
/// <see cref="TorchSharp.Scalar"/> implicitly, as every TorchSharp optimizer's <c>step</c> does
/// (<c>exp_avg.mul_(beta1)</c>, <c>addcdiv_(..., value: -step_size)</c>).
/// </summary>
/// <remarks>
/// Such a conversion makes a temporary <c>Scalar</c> that is unreachable once its native handle is passed on, and its
/// finalizer frees the native value. When another thread's allocation triggers a collection while the native call still
/// reads the value, libtorch reads freed memory: "Unknown scalar type", a failed <c>toDouble</c> check, or, if the memory
/// was reused, a wrong number with no error. One thread alone is safe (a collection then only happens at its own
/// allocations, after the calls that used the temporaries), so the pause is taken only where the step runs on several
/// threads. Reproduced by <c>ScalarRaceTests</c>. The pause is process-wide and counted: pipelines stepping at the same
/// time share one no-GC region, begun by the first and ended by the last. If the region's allocation budget runs out
/// (far more than an optimizer step allocates) the runtime collects and the region ends early; the step still completes.
/// <para>
/// The last holder to leave collects the youngest generation, and every 32nd time every generation. A no-GC region
/// takes the place of the collections the step's allocations would have triggered, so a process whose steps always
/// paused never collected: the temporaries TorchSharp leaves to their finalizers (the Scalars above, wrappers of
/// intermediate tensors) kept their native memory. The character GPT of the tiny Shakespeare recipe on 1 rank x 2
/// replicas grew from 320 MB to 1.07 GB resident in 1,000 steps (the 5,000-step recipe to 4.5 GB, its rate falling
/// from 9,400 to 8,100 tokens/s) and on 2 ranks to 540 MB; with the collections it stays at 290 MB and 160 MB
/// (docs/memory.md). Collecting only the youngest generation is not enough: what it keeps alive moves to the older
/// ones, which then grew (the 2-rank case of MemoryTests by 71 MiB in 2,000 steps).
/// </para>
/// </remarks>
internal static class CollectionPause
{
    // What the steps may allocate in managed memory while the pause holds: TorchSharp allocates about 1 KB of wrappers
    // per parameter tensor and step, so 8 MB covers thousands of tensors; small enough that committing it costs little.
    private const long Budget = 8L << 20;
    private static readonly object Gate = new();
    private static int _holders;
    private static bool _started;
    private static long _regions;

    // Every this many regions the collection after one covers every generation, not only the youngest: what a
    // young collection keeps alive moves to the older generations, which the regions would keep from being collected.
    private const int FullEvery = 32;

    /// <summary>
    /// Holds collections off until the returned lease is disposed (nested and concurrent leases share one pause); with
    /// <paramref name="when"/> false it does nothing.
    /// </summary>
    public static Lease Enter(bool when = true)
    {
        if (!when) return default;
        lock (Gate)
        {
            if (_holders++ == 0)
            {
                try
                {
                    // A region of the application's own is left as it is (and already holds collections off).
                    _started = GCSettings.LatencyMode != GCLatencyMode.NoGCRegion && GC.TryStartNoGCRegion(Budget, disallowFullBlockingGC: false);
                }
                catch (InvalidOperationException)
                {
                    _started = false; // the application holds a no-GC region of its own
                }
            }
        }
        return new Lease(held: true);
    }

    private static void Leave()
    {
        lock (Gate)
        {
            if (--_holders > 0 || !_started) return;
            _started = false;
            if (GCSettings.LatencyMode == GCLatencyMode.NoGCRegion)
            {
                try
                {
                    GC.EndNoGCRegion();
                }
                catch (InvalidOperationException)
                {
                    // Ended by an allocation over the budget between the check and the call.
                }
            }
            // The region's garbage is collected now, while no holder runs, and every older generation now and then: see
            // the remarks.
            GC.Collect(++_regions % FullEvery == 0 ? GC.MaxGeneration : 0, GCCollectionMode.Forced, blocking: true);
        }
    }

    /// <summary>Ends this holder's share of the pause.</summary>
    public readonly struct Lease(bool held) : IDisposable
    {
        /// <inheritdoc />
        public void Dispose()
        {
            if (held) Leave();
        }
    }
}

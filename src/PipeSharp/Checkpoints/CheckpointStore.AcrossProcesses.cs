using PipeSharp.Backends;
using PipeSharp.Runtime;

namespace PipeSharp.Checkpoints;

// Saving a checkpoint when the pipeline's ranks run in several processes, through the backend's collectives.
public static partial class CheckpointStore
{
    // Across processes: every rank of replica 0 writes the files of its own stages' layers into one temporary folder
    // (which must be on a file system all ranks share) and flushes them; their names, lengths and SHA-256s reach rank 0
    // in an all-reduce, and only when every rank has reported success does rank 0 check that it sees every file,
    // write the manifest and rename the folder. A rank that fails or dies on the way leaves no manifest: the previous
    // checkpoint stays the newest complete one, and the next save removes the unfinished folder.
    private static CheckpointManifest SaveAcrossProcesses(string directory, CheckpointManifest manifest, Pipeline pipe, int keep,
        IBackend backend, Action<string>? beforeManifest)
    {
        string name = FolderName(manifest.Step);
        bool root = backend.ProcessIndex == 0;
        // One folder name for all ranks: rank 0 draws it.
        long token = backend.AllReduceSum([root ? Random.Shared.NextInt64(1, 1L << 48) : 0L])[0];
        string temp = Path.Combine(directory, $"{TempPrefix}{name}-{token:x}");
        if (root) Directory.CreateDirectory(temp);
        backend.Barrier();
        int layers = pipe.Balance.Sum();
        const int Slot = 6; // per layer: written-by rank + 1, length, SHA-256 as four 64-bit words
        var report = new long[layers * Slot];
        string? error = null;
        bool writer = pipe.Replicas[0].Index == 0; // replica 0: the replicas hold identical copies
        try
        {
            if (writer)
            {
                Directory.CreateDirectory(temp); // visible already on a shared file system
                foreach (var piece in pipe.Stages)
                foreach (var (layer, file) in LayerFiles.Write(temp, pipe, piece.Index))
                {
                    var hash = Convert.FromHexString(file.Sha256);
                    report[layer * Slot] = backend.ProcessIndex + 1;
                    report[layer * Slot + 1] = file.Length;
                    for (int w = 0; w < 4; w++) report[layer * Slot + 2 + w] = BitConverter.ToInt64(hash, w * 8);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error = $"rank {backend.ProcessIndex} on {backend.HostName} could not write its checkpoint files in {temp}: {e.Message}";
        }
        // Every rank's outcome, then every file's description: a failed rank reports 1 in its slot.
        var failed = new long[backend.ProcessCount];
        failed[backend.ProcessIndex] = error is null ? 0 : 1;
        failed = backend.AllReduceSum(failed);
        report = backend.AllReduceSum(report);
        if (failed.Any(f => f != 0))
        {
            if (root) TryDelete(temp);
            throw new IOException(error ?? $"the checkpoint of step {manifest.Step} was not saved: rank(s) " +
                $"{string.Join(", ", failed.Select((f, r) => (f, r)).Where(x => x.f != 0).Select(x => x.r))} could not write their files (see their errors).");
        }

        CheckpointManifest? result = null;
        string? rootError = null;
        if (root)
        {
            try
            {
                var files = new List<CheckpointFile>();
                for (int s = 0; s < layers; s++)
                {
                    var hash = new byte[32];
                    for (int w = 0; w < 4; w++) BitConverter.TryWriteBytes(hash.AsSpan(w * 8), report[s * Slot + 2 + w]);
                    var file = new CheckpointFile(LayerFiles.Name(s), report[s * Slot + 1], Convert.ToHexStringLower(hash));
                    var info = new FileInfo(Path.Combine(temp, file.Name));
                    if (!info.Exists || info.Length != file.Length)
                        throw new IOException(
                            $"rank {report[s * Slot] - 1} wrote {file.Name} ({file.Length} bytes) but rank 0 on {backend.HostName} " +
                            $"{(info.Exists ? $"sees {info.Length} bytes" : "does not see it")} in {temp}: the checkpoint folder must be on a " +
                            "file system that every rank shares (e.g. NFS), so that one rank can write the manifest for all.");
                    files.Add(file);
                }
                beforeManifest?.Invoke(temp);
                result = Publish(directory, temp, manifest, files, pipe);
                Prune(directory, keep, manifest.Step);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                TryDelete(temp);
                rootError = e.Message;
            }
        }
        long ok = backend.AllReduceSum([root && rootError is null ? 1L : 0L])[0];
        if (ok == 0) throw new IOException(rootError ?? $"rank 0 could not finish the checkpoint of step {manifest.Step} (see its error).");
        return result ?? manifest;
    }
}

using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PipeSharp.Checkpoints;
using PipeSharp.Models;
using PipeSharp.Runtime;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>
/// Checkpoints: bit-identical resume, re-splitting to another stage count, checksums, atomic saves, config checks and
/// export. They set the global torch RNG state, so they run apart from other tests.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public sealed class CheckpointTests : IDisposable
{
    private static readonly GptConfig Tiny = new(VocabularySize: 13, ContextLength: 8, Layers: 4, Width: 16, Heads: 2);
    private readonly string _root = Path.Combine(Path.GetTempPath(), $"pipesharp-checkpoint-tests-{Guid.NewGuid():N}");

    public CheckpointTests() => Directory.CreateDirectory(_root);

    public void Dispose()
    {
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { }
    }

    private sealed class Run(TorchSharp.Modules.Sequential model, Pipeline pipe) : IDisposable
    {
        public Pipeline Pipe { get; } = pipe;

        public List<float> Train(IEnumerable<(Tensor X, Tensor Y)> batches) => batches.Select(b => Pipe.TrainStep(b.X, b.Y)).ToList();

        public void Dispose()
        {
            Pipe.Dispose();
            model.Dispose();
        }
    }

    private static Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> Optimizer(string name) => name switch
    {
        "sgd" => ps => optim.SGD(ps, 0.05, momentum: 0.9),
        "adam" => ps => optim.Adam(ps, 1e-2),
        _ => ps => optim.AdamW(ps, 1e-2, weight_decay: 0.1),
    };

    private static Run NewRun(int stages, int seed = 1, GptConfig? config = null, string optimizer = "adamw")
    {
        manual_seed(seed);
        var model = Gpt.Create(config ?? Tiny);
        var pipe = new Pipeline(model, new PipelineOptions { Ranks = stages, MicroBatches = 2, Schedule = "1f1b", ThreadsPerRank = 1 },
            Gpt.Loss, Optimizer(optimizer));
        return new Run(model, pipe);
    }

    private static List<(Tensor X, Tensor Y)> TokenBatches(int count, int seed = 3)
    {
        var gen = new Generator((ulong)seed);
        return Enumerable.Range(0, count).Select(_ =>
        {
            var tokens = randint(0, Tiny.VocabularySize, [8, Tiny.ContextLength + 1], generator: gen);
            return (tokens[.., ..Tiny.ContextLength], tokens[.., 1..]);
        }).ToList();
    }

    private static CheckpointManifest Manifest(long step, GptConfig? config = null) => new()
    {
        ModelKind = "gpt",
        ModelConfig = CheckpointManifest.ToJson(config ?? Tiny),
        Tokenizer = JsonDocument.Parse("""{"kind":"bytes"}""").RootElement,
        Step = step,
        DataPosition = JsonDocument.Parse($$"""{"batch":{{step}}}""").RootElement,
        TrainerState = JsonDocument.Parse("""{"best_validation_loss":2.5}""").RootElement,
    };

    private static void AssertSameState(IReadOnlyDictionary<string, Tensor> expected, IReadOnlyDictionary<string, Tensor> actual)
    {
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, t) in expected)
            Assert.True(Bitwise(t, actual[name]), $"{name} differs");
    }

    private static bool Bitwise(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return a.dtype == b.dtype && a.shape.SequenceEqual(b.shape)
               && a.detach().cpu().contiguous().bytes.SequenceEqual(b.detach().cpu().contiguous().bytes);
    }

    private static Dictionary<string, Tensor> Snapshot(Pipeline pipe) => pipe.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value);

    // Trains 3 steps, saves, trains 3 more: the reference run's checkpoint and continuation losses.
    private (string Dir, List<float> Continuation, Dictionary<string, Tensor> Saved) Reference(string optimizer = "adamw", int stages = 2)
    {
        string dir = Path.Combine(_root, $"ref-{optimizer}-{stages}");
        var batches = TokenBatches(6);
        using var run = NewRun(stages, optimizer: optimizer);
        run.Train(batches.Take(3));
        CheckpointStore.Save(dir, Manifest(3), run.Pipe);
        var saved = Snapshot(run.Pipe);
        var continuation = run.Train(batches.Skip(3));
        return (dir, continuation, saved);
    }

    [Theory]
    [InlineData("adamw")]
    [InlineData("adam")]
    [InlineData("sgd")]
    public void Resuming_gives_bitwise_the_same_losses_as_the_uninterrupted_run(string optimizer)
    {
        var (dir, expected, saved) = Reference(optimizer);
        using var run = NewRun(2, seed: 99, optimizer: optimizer);
        using (var checkpoint = CheckpointStore.Load(dir))
        {
            Assert.Equal(3, checkpoint.Manifest.Step);
            Assert.Equal(0, run.Pipe.TrainingSteps);
            checkpoint.ApplyTo(run.Pipe, "gpt", CheckpointManifest.ToJson(Tiny));
            Assert.Equal(3, run.Pipe.TrainingSteps); // keyed dropout goes on with step 3's masks
        }
        AssertSameState(saved, run.Pipe.StateDict());
        Assert.Equal(0, run.Pipe.SharedParameterDrift());
        var losses = run.Train(TokenBatches(6).Skip(3));
        Assert.Equal(expected, losses);
    }

    [Fact]
    public void The_manifest_holds_the_callers_fields_the_split_the_files_and_the_rng_state()
    {
        string dir = Path.Combine(_root, "manifest");
        using var run = NewRun(2);
        var written = CheckpointStore.Save(dir, Manifest(7), run.Pipe);
        var expectedRandom = rand(4);

        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "step-000007", "manifest.json")))!;
        Assert.Equal("gpt", (string?)manifest["model_kind"]);
        Assert.Equal(16, (int?)manifest["model_config"]!["Width"]);
        Assert.Equal(7, (long?)manifest["step"]);
        Assert.Equal(7, (int?)manifest["data_position"]!["batch"]);
        Assert.Equal(2.5, (double?)manifest["trainer_state"]!["best_validation_loss"]);
        Assert.Equal("[3,3]", manifest["balance"]!.ToJsonString());
        Assert.Equal(2, (int?)manifest["stages"]);
        Assert.Equal(Enumerable.Range(0, 6).Select(i => $"layer-{i}.safetensors"), written.Files.Select(f => f.Name)); // one file per layer
        Assert.All(written.Files, f => Assert.Matches("^[0-9a-f]{64}$", f.Sha256));

        using var checkpoint = CheckpointStore.Load(dir);
        Assert.Equal(written.Files, checkpoint.Manifest.Files);
        Assert.Equal("bytes", checkpoint.Manifest.Tokenizer!.Value.GetProperty("kind").GetString());
        checkpoint.ApplyTo(run.Pipe);
        Assert.True(Bitwise(expectedRandom, rand(4)), "the global RNG continues where it was when saved");
    }

    [Theory]
    [InlineData(3)]
    [InlineData(1)]
    public void A_checkpoint_saved_with_two_stages_loads_into_another_number_of_stages(int stages)
    {
        var (dir, expected, saved) = Reference();
        using var run = NewRun(stages, seed: 42);
        Assert.Equal(stages, run.Pipe.Stages.Count);
        using (var checkpoint = CheckpointStore.Load(dir))
            checkpoint.ApplyTo(run.Pipe, "gpt", CheckpointManifest.ToJson(Tiny));
        AssertSameState(saved, run.Pipe.StateDict());
        var losses = run.Train(TokenBatches(6).Skip(3));
        for (int i = 0; i < expected.Count; i++)
            Assert.True(Math.Abs(expected[i] - losses[i]) <= 1e-5, $"step {i}: {losses[i]} vs {expected[i]}");
    }

    [Fact]
    public void A_checkpoint_saved_with_one_stage_loads_into_three()
    {
        var (dir, expected, _) = Reference(stages: 1);
        using var run = NewRun(3, seed: 42);
        using (var checkpoint = CheckpointStore.Load(dir))
            checkpoint.ApplyTo(run.Pipe, "gpt", CheckpointManifest.ToJson(Tiny));
        var losses = run.Train(TokenBatches(6).Skip(3));
        for (int i = 0; i < expected.Count; i++)
            Assert.True(Math.Abs(expected[i] - losses[i]) <= 1e-5, $"step {i}: {losses[i]} vs {expected[i]}");
        Assert.Equal(0, run.Pipe.SharedParameterDrift());
    }

    private string TwoCheckpoints()
    {
        string dir = Path.Combine(_root, $"two-{Guid.NewGuid():N}");
        using var run = NewRun(2);
        var batches = TokenBatches(6);
        run.Train(batches.Take(3));
        CheckpointStore.Save(dir, Manifest(3), run.Pipe);
        run.Train(batches.Skip(3));
        CheckpointStore.Save(dir, Manifest(6), run.Pipe);
        Assert.Equal(new long[] { 3, 6 }, CheckpointStore.Steps(dir));
        return dir;
    }

    [Fact]
    public void A_flipped_byte_is_reported_by_file_and_the_older_checkpoint_still_loads()
    {
        string dir = TwoCheckpoints();
        string file = Path.Combine(dir, "step-000006", "layer-5.safetensors");
        var bytes = File.ReadAllBytes(file);
        bytes[bytes.Length / 2] ^= 0x10;
        File.WriteAllBytes(file, bytes);

        var e = Assert.Throws<CheckpointCorruptException>(() => CheckpointStore.Load(dir));
        Assert.Equal("layer-5.safetensors", e.File);
        Assert.Contains("layer-5.safetensors has SHA-256", e.Message);
        Assert.Contains("LoadStep", e.Message);
        Assert.Equal(new long[] { 3 }, e.OtherSteps);
        Assert.True(File.Exists(file), "nothing is deleted");

        using var older = CheckpointStore.LoadStep(dir, 3);
        Assert.Equal(3, older.Manifest.Step);
        using var run = NewRun(2, seed: 5);
        older.ApplyTo(run.Pipe, "gpt", CheckpointManifest.ToJson(Tiny));
    }

    [Fact]
    public void A_truncated_file_is_reported_by_file_and_length()
    {
        string dir = TwoCheckpoints();
        string file = Path.Combine(dir, "step-000006", "layer-0.safetensors");
        long length = new FileInfo(file).Length;
        using (var stream = new FileStream(file, FileMode.Open)) stream.SetLength(length - 100);

        var e = Assert.Throws<CheckpointCorruptException>(() => CheckpointStore.Load(dir));
        Assert.Equal("layer-0.safetensors", e.File);
        Assert.Contains($"has {length - 100} bytes but the manifest says {length}", e.Message);
        using var older = CheckpointStore.LoadStep(dir, 3);
    }

    [Fact]
    public void A_changed_or_missing_manifest_checksum_is_reported()
    {
        string dir = TwoCheckpoints();
        string manifest = Path.Combine(dir, "step-000006", "manifest.json");
        File.WriteAllText(manifest, File.ReadAllText(manifest).Replace("\"step\": 6", "\"step\": 7"));
        var e = Assert.Throws<CheckpointCorruptException>(() => CheckpointStore.Load(dir));
        Assert.Equal("manifest.json", e.File);

        File.Delete(Path.Combine(dir, "step-000006", "manifest.json.sha256"));
        e = Assert.Throws<CheckpointCorruptException>(() => CheckpointStore.Load(dir));
        Assert.Equal("manifest.json.sha256", e.File);
    }

    [Fact]
    public void A_crash_before_the_manifest_leaves_the_previous_checkpoint_as_the_newest()
    {
        string dir = Path.Combine(_root, "crash");
        using var run = NewRun(2);
        var batches = TokenBatches(4);
        run.Train(batches.Take(2));
        CheckpointStore.Save(dir, Manifest(2), run.Pipe);
        var saved = Snapshot(run.Pipe);
        run.Train(batches.Skip(2));

        string? tempSeen = null;
        Assert.Throws<IOException>(() => CheckpointStore.Save(dir, Manifest(4), run.Pipe, CheckpointStore.DefaultKeep, temp =>
        {
            tempSeen = temp;
            Assert.True(File.Exists(Path.Combine(temp, "layer-5.safetensors")));
            throw new IOException("simulated crash");
        }));
        Assert.NotNull(tempSeen);
        Assert.Equal(new long[] { 2 }, CheckpointStore.Steps(dir));

        // What a real crash leaves: an unfinished temp folder (even with a manifest) and a step folder without one.
        string leftover = Path.Combine(dir, ".tmp-step-000004-crashed");
        CopyFolder(Path.Combine(dir, "step-000002"), leftover);
        Directory.CreateDirectory(Path.Combine(dir, "step-000009"));
        File.Copy(Path.Combine(dir, "step-000002", "layer-0.safetensors"), Path.Combine(dir, "step-000009", "layer-0.safetensors"));

        using (var checkpoint = CheckpointStore.Load(dir))
        {
            Assert.Equal(2, checkpoint.Manifest.Step);
            AssertSameState(saved, checkpoint.ModelState);
        }
        CheckpointStore.Save(dir, Manifest(4), run.Pipe);
        Assert.False(Directory.Exists(leftover), "the next save removes unfinished folders");
        Assert.Equal(new long[] { 2, 4 }, CheckpointStore.Steps(dir));
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }

    [Fact]
    public void Only_the_newest_checkpoints_are_kept_and_resaving_a_step_replaces_it()
    {
        string dir = Path.Combine(_root, "prune");
        using var run = NewRun(2);
        foreach (var step in new[] { 1, 2, 3, 4 }) CheckpointStore.Save(dir, Manifest(step), run.Pipe, keep: 2);
        Assert.Equal(new long[] { 3, 4 }, CheckpointStore.Steps(dir));
        CheckpointStore.Save(dir, Manifest(4), run.Pipe, keep: 2);
        Assert.Equal(new long[] { 3, 4 }, CheckpointStore.Steps(dir));
        Assert.Equal(new[] { "step-000003", "step-000004" }, Directory.GetDirectories(dir).Select(Path.GetFileName).Order());
        using var checkpoint = CheckpointStore.Load(dir);
        Assert.Equal(4, checkpoint.Manifest.Step);
    }

    [Fact]
    public void A_missing_or_empty_folder_gives_a_clear_error()
    {
        string missing = Path.Combine(_root, "nothing-here");
        Assert.Contains("does not exist", Assert.Throws<DirectoryNotFoundException>(() => CheckpointStore.Load(missing)).Message);
        Directory.CreateDirectory(missing);
        Assert.Contains("holds no checkpoint", Assert.Throws<FileNotFoundException>(() => CheckpointStore.Load(missing)).Message);
        Assert.Empty(CheckpointStore.Steps(Path.Combine(_root, "also-missing")));
    }

    [Fact]
    public void A_checkpoint_of_another_model_config_is_refused_and_nothing_changes()
    {
        var (dir, _, _) = Reference();
        var wider = Tiny with { Width = 32 };
        using var run = NewRun(2, seed: 7, config: wider);
        var before = Snapshot(run.Pipe);
        using var checkpoint = CheckpointStore.Load(dir);

        var e = Assert.Throws<CheckpointMismatchException>(() => checkpoint.ApplyTo(run.Pipe, "gpt", CheckpointManifest.ToJson(wider)));
        Assert.Contains("Width: 16 in the checkpoint, 32 here", e.Message);
        Assert.Contains(""""Width":16"""", e.Message);

        // Without the config check, the shapes still refuse it before anything is copied.
        var shape = Assert.Throws<ArgumentException>(() => checkpoint.ApplyTo(run.Pipe));
        Assert.Contains("parameter embed.wte.weight has shape [13,16] in the checkpoint but [13,32] in the model: " +
                        "the checkpoint was saved from a different model config", shape.Message);
        AssertSameState(before, run.Pipe.StateDict());
    }

    [Fact]
    public void State_dicts_name_every_parameter_and_refuse_missing_or_unexpected_names()
    {
        using var run = NewRun(2);
        var state = Snapshot(run.Pipe);
        Assert.Contains("embed.wte.weight", state.Keys);
        Assert.Contains("head.lm_head.weight", state.Keys);
        Assert.True(Bitwise(state["embed.wte.weight"], state["head.lm_head.weight"]));
        Assert.All(state.Values, t => Assert.Equal(DeviceType.CPU, t.device_type));

        var partial = state.Where(kv => kv.Key != "block1.mlp.c_fc.bias").ToDictionary(kv => kv.Key, kv => kv.Value);
        partial["block9.extra"] = zeros(1);
        var e = Assert.Throws<ArgumentException>(() => run.Pipe.LoadStateDict(partial));
        Assert.Contains("missing: block1.mlp.c_fc.bias", e.Message);
        Assert.Contains("unexpected: block9.extra", e.Message);

        var untied = state.ToDictionary(kv => kv.Key, kv => kv.Value);
        untied["head.lm_head.weight"] = zeros_like(state["head.lm_head.weight"]);
        Assert.Contains("tied", Assert.Throws<ArgumentException>(() => run.Pipe.LoadStateDict(untied)).Message);
        AssertSameState(state, run.Pipe.StateDict());
    }

    [Fact]
    public void Optimizer_state_of_another_optimizer_is_refused_and_nothing_changes()
    {
        using var adam = NewRun(2, optimizer: "adamw");
        adam.Train(TokenBatches(1));
        using var sgd = NewRun(2, optimizer: "sgd");
        sgd.Train(TokenBatches(1));
        var before = sgd.Pipe.OptimizerState();
        var e = Assert.Throws<ArgumentException>(() => sgd.Pipe.LoadOptimizerState(adam.Pipe.OptimizerState()));
        Assert.Contains("AdamW", e.Message);
        Assert.Equal(before.Keys.Order(), sgd.Pipe.OptimizerState().Keys.Order());
        foreach (var (name, blob) in sgd.Pipe.OptimizerState()) Assert.Equal(before[name], blob);
    }

    [Fact]
    public void Optimizer_state_that_fails_part_way_is_rolled_back()
    {
        // Same names; the position embedding (the second parameter) has another shape, so loading fails after the first.
        using var longer = NewRun(2, config: Tiny with { ContextLength = 12 });
        longer.Train(TokenBatches(1));
        using var run = NewRun(2);
        run.Train(TokenBatches(2));
        var before = run.Pipe.OptimizerState();
        var e = Assert.Throws<ArgumentException>(() => run.Pipe.LoadOptimizerState(longer.Pipe.OptimizerState()));
        Assert.Contains("nothing was changed", e.Message);
        foreach (var (name, blob) in run.Pipe.OptimizerState()) Assert.Equal(before[name], blob);
        Assert.Equal(2, OptimizerStep(run.Pipe, "embed.wte.weight"));
    }

    // AdamW's step count from a parameter's blob: after the magic, the type name and the options comes the state.
    private static long OptimizerStep(Pipeline pipe, string name)
    {
        using var r = new BinaryReader(new MemoryStream(pipe.OptimizerState()[name]));
        r.ReadString();
        r.ReadString();
        r.ReadBytes(r.ReadInt32());
        r.ReadInt32();
        return r.ReadInt64();
    }

    [Fact]
    public void Export_writes_safetensors_that_name_every_parameter_with_its_shape_and_the_config_beside_it()
    {
        using var run = NewRun(2);
        run.Train(TokenBatches(2));
        string folder = Path.Combine(_root, "export");
        string path = Path.Combine(folder, "model.safetensors");
        ModelExport.Save(run.Pipe, path, Tiny);
        var state = Snapshot(run.Pipe);

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!;
        Assert.Equal(13, (int?)config["VocabularySize"]);

        // The header as PyTorch's safetensors reads it: 8-byte little-endian length, then JSON; data 8-byte aligned.
        var bytes = File.ReadAllBytes(path);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, headerLength % 8);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, (int)headerLength))!.AsObject();
        Assert.Equal("pt", (string?)header["__metadata__"]!["format"]);
        Assert.Equal(state.Keys.Order(), header.Select(kv => kv.Key).Where(k => k != "__metadata__").Order());
        long end = 0;
        foreach (var (name, t) in state)
        {
            Assert.Equal("F32", (string?)header[name]!["dtype"]);
            Assert.Equal(t.shape, header[name]!["shape"]!.AsArray().Select(d => (long)d!));
            end = Math.Max(end, (long)header[name]!["data_offsets"]![1]!);
        }
        Assert.Equal(bytes.Length, 8 + headerLength + end);

        // An independent reader (TorchSharp.PyBridge) gets the same values, and an unsplit model loads the file.
        var read = Safetensors.LoadStateDict(path);
        AssertSameState(state, read);
        manual_seed(11);
        using var unsplit = Gpt.Create(Tiny);
        unsplit.load_safetensors(path);
        foreach (var (name, p) in unsplit.named_parameters()) Assert.True(Bitwise(p, state[name]), name);
    }

    [Fact]
    public void Export_as_a_pytorch_state_dict_and_from_a_loaded_checkpoint()
    {
        var (dir, _, saved) = Reference();
        string path = Path.Combine(_root, "export-pt", "model.pt");
        using (var checkpoint = CheckpointStore.Load(dir))
            ModelExport.Save(checkpoint.ModelState, path, checkpoint.Manifest.ModelConfig);
        var read = PyTorchUnpickler.UnpickleStateDict(path);
        Assert.Equal(saved.Keys.Order(), read.Keys.Cast<string>().Order());
        Assert.True(File.Exists(Path.Combine(_root, "export-pt", "config.json")));
        Assert.Throws<ArgumentException>(() => ModelExport.Save(saved, Path.Combine(_root, "model.onnx"), Tiny));
    }
}

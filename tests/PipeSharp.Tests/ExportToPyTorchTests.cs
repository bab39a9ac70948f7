using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using PipeSharp.Checkpoints;
using PipeSharp.Data;
using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Training;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>A test that needs PyTorch for Python (Debian's python3-torch); skipped, with the reason, where it is missing.</summary>
public sealed class PyTorchFactAttribute : FactAttribute
{
    /// <summary>Debian's Python, which python3-torch installs into (a python3 earlier on PATH may be another one).</summary>
    public static string Python => File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

    private static readonly Lazy<bool> s_available = new(() =>
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo(Python, "-c \"import torch\"") { RedirectStandardError = true, RedirectStandardOutput = true })!;
            return p.WaitForExit(60_000) && p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; } // no python3
    });

    public PyTorchFactAttribute()
    {
        if (!s_available.Value) Skip = "PyTorch for Python is not installed (apt-get install python3-torch; .ci/run installs it).";
    }
}

/// <summary>
/// The export format as docs/export.md writes it down, checked by the PyTorch loader printed there
/// (docs/export/load_pipesharp_gpt.py): it rebuilds the model from config.json alone and gives the same logits.
/// </summary>
public sealed class ExportToPyTorchTests : IDisposable
{
    private readonly TempFolder _temp = new();

    private string Folder => _temp.Path;

    [PyTorchFact]
    public void The_documented_pytorch_loader_gives_the_logits_of_the_exported_model()
    {
        const string prompt = "ROMEO:\nWhat light";
        var tokenizer = CharTokenizer.Train(DataTests.Shakespeare()[..5000]);
        var config = new GptConfig(tokenizer.VocabularySize, ContextLength: 24, Layers: 3, Width: 32, Heads: 4);
        manual_seed(21);
        using var model = Gpt.Create(config);
        using (no_grad())
            foreach (var p in model.parameters()) p.add_(randn_like(p) * 0.1); // biases and norms away from 0 and 1
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 1 }, (o, t) => Gpt.Loss(o, t), ps => optim.SGD(ps, 0));
        var info = new LanguageModelCheckpointInfo(config, LanguageModelTaskSpec.Text("shakespeare.txt"), tokenizer.Spec, 7);
        string path = Path.Combine(Folder, "model.pt");
        ModelExport.Save(pipe, path, GptExportConfig.From(info));

        var written = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder, ModelExport.ConfigName)))!;
        Assert.Equal("pipesharp-gpt", (string?)written["model_type"]);
        Assert.Equal(tokenizer.Spec.Characters, (string?)written["tokenizer"]!["characters"]);
        Assert.Equal(7, (long?)written["step"]);

        float[] expected;
        using (var ids = tensor(tokenizer.Encode(prompt).Select(i => (long)i).ToArray()).unsqueeze(0))
        using (var logits = pipe.Forward(ids))
            expected = logits[0, -1].data<float>().ToArray();

        string loader = Path.Combine(AppContext.BaseDirectory, "docs", "export", "load_pipesharp_gpt.py");
        var info2 = new ProcessStartInfo(PyTorchFactAttribute.Python) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { loader, path, "--prompt", prompt, "--logits" }) info2.ArgumentList.Add(a);
        using var python = Process.Start(info2)!;
        var output = python.StandardOutput.ReadToEndAsync();
        string errors = python.StandardError.ReadToEnd();
        Assert.True(python.WaitForExit(120_000), "the PyTorch loader did not finish within 120 s");
        Assert.True(python.ExitCode == 0, errors);
        var actual = JsonSerializer.Deserialize<float[]>(output.Result)!;

        Assert.Equal(expected.Length, actual.Length);
        float spread = expected.Max() - expected.Min();
        Assert.True(spread > 0.5, $"the logits are nearly flat ({spread}): the comparison would prove little");
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) < 1e-4, $"logit {i}: PipeSharp {expected[i]}, PyTorch {actual[i]}");
    }

    public void Dispose() => _temp.Dispose();
}

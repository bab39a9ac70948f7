using System.CommandLine;
using PipeSharp.Checkpoints;
using PipeSharp.Cli.Options;
using PipeSharp.Cli.Output;
using PipeSharp.Native;
using PipeSharp.Runtime;
using PipeSharp.Training;

namespace PipeSharp.Cli.Commands;

/// <summary><c>pipesharp export</c>: writes the newest checkpoint's model as one file PyTorch loads, with its config.</summary>
internal static class ExportCommand
{
    private static readonly Option<string> Checkpoint = CheckpointFolder.Option("exported");

    private static readonly Option<string?> Output = OutputFile.Create("--output", "FILE",
        "The model file: .safetensors (safetensors.torch.load_file) or .pt/.pth/.bin (a PyTorch state dict, torch.load). " +
        $"The model config is written as {ModelExport.ConfigName} in the same folder (replacing one that is there).");

    public static Command Create()
    {
        Output.Required = true;
        var command = new Command("export",
            "Export the newest checkpoint of a train --model gpt run as one model file (all stages merged, parameters " +
            "under their model names) plus its config, for PyTorch.")
        {
            Checkpoint, Output,
        };
        command.SetAction(Run);
        return command;
    }

    private static int Run(ParseResult args)
    {
        string path = args.GetValue(Output)!;
        // Before the checkpoint is read: the model file and the config beside it can be written.
        OutputFile.CheckWritable(path, Output.Name);
        OutputFile.CheckWritable(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, ModelExport.ConfigName), Output.Name);
        TorchNative.EnsureLoaded();
        var (info, loaded) = CheckpointFolder.Open(args.GetValue(Checkpoint)!);
        using (loaded)
        {
            using var pipe = LanguageModelCheckpoint.LoadForInference(loaded, ranks: 1);
            ModelExport.Save(pipe, path, GptExportConfig.From(info));
            long parameters = pipe.Stages.Sum(s => s.ParameterCount); // one rank: the whole model in one stage
            string folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
            Console.WriteLine($"wrote {path} (model of {loaded.Path}, step {info.Step})");
            Console.WriteLine($"wrote {Path.Combine(folder, ModelExport.ConfigName)}");
            Console.WriteLine($"{parameters:N0} parameters" +
                              (info.Config.TieEmbeddings ? " (the head's weight is the token embedding: stored under both names)" : ""));
        }
        return ExitCodes.Success;
    }
}

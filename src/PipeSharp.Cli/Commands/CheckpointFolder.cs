using System.CommandLine;
using PipeSharp.Checkpoints;
using PipeSharp.Training;

namespace PipeSharp.Cli.Commands;

/// <summary>The <c>--checkpoint DIR</c> of <c>generate</c> and <c>export</c>: the folder a <c>train --model gpt</c> run saved into.</summary>
internal static class CheckpointFolder
{
    public static Option<string> Option(string use) => new("--checkpoint")
    {
        Description = $"The checkpoint folder of a train --model gpt run (its --checkpoint DIR); the newest checkpoint is {use}.",
        HelpName = "DIR",
        Required = true,
    };

    /// <summary>Opens (and verifies) the newest checkpoint in <paramref name="directory"/>.</summary>
    public static (LanguageModelCheckpointInfo Info, LoadedCheckpoint Loaded) Open(string directory) =>
        File.Exists(directory)
            ? throw new ArgumentException($"--checkpoint: '{directory}' is a file; give the folder that train --checkpoint saved into.")
            : LanguageModelCheckpoint.Open(directory);
}

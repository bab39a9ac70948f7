using System.CommandLine;
using PipeSharp.Cli.Options;
using PipeSharp.Cli.Output;
using PipeSharp.Data;
using PipeSharp.Generation;
using PipeSharp.Native;
using PipeSharp.Training;

namespace PipeSharp.Cli.Commands;

/// <summary>
/// <c>pipesharp generate</c>: continues a prompt with the newest checkpoint of a <c>train --model gpt</c> run, the
/// model on any number of ranks (the same seed gives the same text whatever the split).
/// </summary>
internal static class GenerateCommand
{
    private static readonly Option<string> Checkpoint = CheckpointFolder.Option("used");

    private static readonly Option<string> Prompt = new("--prompt")
    {
        Description = "The text to continue. Its characters must be in the training text's vocabulary (char tokenizer). " +
                      "For the sorting task, digits: \"2 0 1 1 0 2\" or \"201102\".",
        HelpName = "TEXT",
        Required = true,
    };

    /// <summary>
    /// The most tokens one run generates. Memory is no limit (only the context window is kept and the text is printed
    /// as it comes), time is: every token is one forward pass of the whole model, so a million already take hours.
    /// </summary>
    public const int MaxTokens = 1_000_000;

    private static readonly Option<int> Tokens = new("--tokens", "-n")
    {
        CustomParser = Numbers.Between(1, MaxTokens,
            "each token is one forward pass of the whole model, so a million already take hours; for more, run again " +
            "with the end of the text as --prompt"),
        Description = $"Number of tokens to generate, 1 to {MaxTokens:N0} (sorting task: 6 writes the sorted digits). " +
                      "The text is printed as it is generated.",
        HelpName = "N",
        Required = true,
    };

    private static readonly Option<double> Temperature = new("--temperature")
    {
        CustomParser = Numbers.NonNegative,
        Description = "Sampling temperature: 0 picks the most likely token every time; higher is more random.",
        DefaultValueFactory = _ => 0.8,
        HelpName = "X",
    };

    private static readonly Option<int> TopK = new("--top-k")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Sample only among the K most likely tokens [default: all].",
        HelpName = "K",
    };

    private static readonly Option<int> Seed = new("--seed")
    {
        CustomParser = Numbers.AtLeast(0),
        Description = "Seed of the sampling: the same seed prints the same text, for any --ranks.",
        DefaultValueFactory = _ => 0,
        HelpName = "S",
    };

    private static readonly Option<int> Ranks = ScheduleOptions.Ranks(
        "Pipeline ranks to run the model on, one stage each (at most --layers + 2).", defaultValue: 1);

    public static Command Create()
    {
        var command = new Command("generate",
            "Continue a prompt with a GPT trained by train --model gpt --checkpoint DIR. Prints the prompt and the " +
            "generated text on stdout (which checkpoint was used on stderr).")
        {
            Checkpoint, Prompt, Tokens, Temperature, TopK, Seed, Ranks,
        };
        command.SetAction(Run);
        return command;
    }

    private static int Run(ParseResult args)
    {
        string prompt = args.GetValue(Prompt)!;
        TorchNative.EnsureLoaded();
        var (info, loaded) = CheckpointFolder.Open(args.GetValue(Checkpoint)!);
        using (loaded)
        {
            var tokenizer = TokenizerOf(info, prompt);
            var ids = tokenizer.Encode(prompt); // an unknown character fails here, before the model is built
            if (ids.Length == 0) throw new ArgumentException("the prompt has no tokens: give at least one character.");
            int ranks = args.GetValue(Ranks);
            using var pipe = LanguageModelCheckpoint.LoadForInference(loaded, ranks);
            foreach (var piece in pipe.Stages) piece.eval(); // no dropout when generating
            var c = info.Config;
            Console.Error.WriteLine($"checkpoint {loaded.Path} (step {info.Step}): GPT {c.Layers} layers, width {c.Width}, " +
                                    $"context {c.ContextLength}, vocabulary {c.VocabularySize}; {ranks} rank{(ranks == 1 ? "" : "s")}");
            if (info.Task.Kind == "sorting" && ids.Length != info.Task.SortLength)
                Console.Error.WriteLine($"note: the model learned to sort {info.Task.SortLength} digits; this prompt has {ids.Length}.");

            var sampler = new TokenSampler(args.GetValue(Temperature), args.GetResult(TopK) is null ? null : args.GetValue(TopK), args.GetValue(Seed));
            // Printed as it comes (Ctrl+C keeps what is on the screen); only the context window is held.
            var decoder = new StreamingDecoder(tokenizer);
            var stdout = Console.Out;
            stdout.Write(decoder.Start(ids));
            stdout.Flush();
            foreach (int token in TextGenerator.Stream(x => pipe.Forward(x), ids, args.GetValue(Tokens), c.ContextLength, sampler))
            {
                string piece = decoder.Add(token);
                if (piece.Length == 0) continue;
                stdout.Write(piece);
                stdout.Flush();
            }
            stdout.WriteLine(decoder.Flush());
        }
        return ExitCodes.Success;
    }

    /// <summary>The checkpoint's tokenizer (same ids as in training), or digits for the sorting task.</summary>
    private static ITokenizer TokenizerOf(LanguageModelCheckpointInfo info, string prompt) =>
        info.Task.Kind == "sorting"
            ? DigitTokenizer.For(info.Task.SortDigits, prompt)
            : Tokenizers.FromSpec(info.Tokenizer ?? throw new ArgumentException("the checkpoint of a text task has no tokenizer: it cannot read prompts."));
}

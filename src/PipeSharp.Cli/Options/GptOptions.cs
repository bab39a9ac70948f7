using System.CommandLine;
using PipeSharp.Cli.Output;
using PipeSharp.Data;

namespace PipeSharp.Cli.Options;

/// <summary>The options of <c>train</c> that only <c>--model gpt</c> uses (the others are <see cref="TrainOptions"/>).</summary>
internal static class GptOptions
{
    /// <summary>The corpus that comes with PipeSharp (the repository's data/tinyshakespeare.txt), beside this program.</summary>
    public static string BundledCorpus => Path.Combine(AppContext.BaseDirectory, "data", "tinyshakespeare.txt");

    public static readonly Option<string> Task = new Option<string>("--task")
    {
        Description = "(gpt) text: learn a text file (--data; next-token prediction, the last 10% is the validation " +
                      "split, a generated sample at the end). sorting: the built-in sorting task, read 6 digits from " +
                      "0..2 and write them sorted (context 11, no data; accuracy on 500 validation problems at the end).",
        DefaultValueFactory = _ => "text",
    }.AcceptOnlyFromAmong("text", "sorting");

    public static readonly Option<string?> Data = new("--data")
    {
        Description = "(gpt) UTF-8 text file to learn [default: tiny Shakespeare, 1.1 MB, which comes with PipeSharp].",
        HelpName = "FILE",
    };

    public static readonly Option<int> SampleTokens = Int("--sample", 0, "N",
        "(gpt, text) Tokens of text to generate after training, printed under 'sample'; 0 for none.", 500);

    public static readonly Option<string?> Tokenizer = new Option<string?>("--tokenizer")
    {
        Description = "(gpt) char (one token per character of the text) or gpt2 (GPT-2's BPE, 50,257 tokens) [default: " +
                      "char; when resuming, the checkpoint's].",
    }.AcceptOnlyFromAmong(Tokenizers.CharKind, Tokenizers.Gpt2Kind);

    public static readonly Option<int> Layers = Int("--layers", 1, "N", "(gpt) Transformer blocks [default: 4; sorting task: 2].");
    public static readonly Option<int> Width = Int("--width", 1, "D", "(gpt) Embedding width, a multiple of --heads [default: 128; sorting task: 64].");
    public static readonly Option<int> Heads = Int("--heads", 1, "H", "(gpt) Attention heads.", 4);
    public static readonly Option<int> Context = Int("--context", 1, "T",
        "(gpt) Context length: tokens per training sequence [default: 64]. The sorting task always uses 11.");
    public static readonly Option<double> Dropout = Real("--dropout", "P", "(gpt) Dropout probability, in [0, 1). " +
        "Keyed masks: the same for any layout, and a resumed run prints exactly the losses of an uninterrupted one.", 0);
    public static readonly Option<double> MinLearningRate = Real("--min-lr", "X", "(gpt) Learning rate at the end of the cosine decay.", 1e-4);
    public static readonly Option<int> Warmup = Int("--warmup", 0, "N", "(gpt) Steps of linear learning-rate warm-up [default: 40; sorting task: 100].");
    public static readonly Option<double> WeightDecay = Real("--weight-decay", "X", "(gpt) AdamW weight decay (matrices and embeddings only).", 0.1);
    public static readonly Option<double> Clip = Real("--clip", "X", "(gpt) Clip the global gradient norm (over all stages) to this; 0 for no clipping.", 1.0);
    public static readonly Option<int> EvalEvery = Int("--eval-every", 0, "N", "(gpt) Measure the validation loss every N steps (and always at the end); 0 for only at the end.", 100);
    public static readonly Option<int> EvalBatches = Int("--eval-batches", 1, "N", "(gpt) Validation batches per measurement.", 20);

    public static readonly Option<string?> Checkpoint = new("--checkpoint")
    {
        Description = "(gpt) Save checkpoints into this folder (one step-N sub-folder each; the newest 2 are kept): at " +
                      "the end, every --checkpoint-every steps and when stopped by Ctrl+C or SIGTERM. Use it with generate and export.",
        HelpName = "DIR",
    };

    public static readonly Option<int> CheckpointEvery = Int("--checkpoint-every", 0, "N", "(gpt) Also save a checkpoint every N steps; 0 for only at the end.", 0);

    public static readonly Option<bool> Resume = new("--resume")
    {
        Description = "(gpt) Continue from the newest checkpoint in --checkpoint DIR; refused if it holds none (see " +
                      "--resume-or-start). Give the same model options and --steps as the run that saved it; a text " +
                      "task uses the checkpoint's tokenizer.",
    };

    public static readonly Option<bool> ResumeOrStart = new("--resume-or-start")
    {
        Description = "(gpt) Like --resume, but start from step 0 if --checkpoint DIR holds no checkpoint yet (e.g. a job " +
                      "that is simply started again until it is done).",
    };

    /// <summary>True with --resume or --resume-or-start.</summary>
    public static bool Resuming(ParseResult args) => args.GetValue(Resume) || args.GetValue(ResumeOrStart);

    public static readonly Option<string?> Log = OutputFile.Create("--log", "FILE.csv",
        "(gpt) Write step,loss,lr,tokens_per_s,val_loss per step (a resumed run keeps the rows up to its checkpoint and appends).");

    public static readonly Option<string?> LossCurve = OutputFile.Create("--loss-curve", "FILE.svg",
        $"(gpt) After training, draw the training loss (each step and its running mean over {LossHistory.SmoothingWindow} steps) " +
        "and the validation loss as an SVG picture.");

    public static readonly Option<bool> BalanceByTime = new("--balance-by-time")
    {
        Description = "(gpt) The same as --balance time: split the model by each layer's measured forward + backward time on one " +
                      "micro-batch, stage by stage (kept for scripts; --balance auto, the default, also measures).",
    };

    /// <summary>Every option above, in help order.</summary>
    public static IReadOnlyList<Option> All { get; } =
    [
        Task, Data, SampleTokens, Tokenizer, Layers, Width, Heads, Context, Dropout, MinLearningRate, Warmup, WeightDecay, Clip, EvalEvery,
        EvalBatches, BalanceByTime, Checkpoint, CheckpointEvery, Resume, ResumeOrStart, Log, LossCurve,
    ];

    private static Option<int> Int(string name, int minimum, string helpName, string description, int? defaultValue = null)
    {
        var option = new Option<int>(name) { CustomParser = Numbers.AtLeast(minimum), Description = description, HelpName = helpName };
        if (defaultValue is { } d) option.DefaultValueFactory = _ => d;
        return option;
    }

    private static Option<double> Real(string name, string helpName, string description, double defaultValue) => new(name)
    {
        CustomParser = Numbers.NonNegative,
        Description = description,
        HelpName = helpName,
        DefaultValueFactory = _ => defaultValue,
    };
}

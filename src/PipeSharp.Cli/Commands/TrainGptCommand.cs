using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using PipeSharp.Checkpoints;
using PipeSharp.Cli.Options;
using PipeSharp.Cli.Output;
using PipeSharp.Data;
using PipeSharp.Models;
using PipeSharp.Native;
using PipeSharp.Partitioning;
using PipeSharp.Runtime;
using PipeSharp.Tracing;
using PipeSharp.Training;

namespace PipeSharp.Cli.Commands;

/// <summary>
/// <c>pipesharp train --model gpt</c>: trains a GPT with <see cref="LanguageModelTrainer"/> on a text file or on the
/// built-in sorting task; checkpoints and resumes with <see cref="LanguageModelCheckpoint"/>. Its options are part of
/// <c>train</c>: <see cref="GptOptions"/>, and <see cref="TrainOptions"/> for the pipeline and the run.
/// </summary>
internal static class TrainGptCommand
{
    public const string ModelName = "gpt";
    private const int AccuracyProblems = 500;

    public static int Run(ParseResult args, Mpi.MpiCluster? cluster, StopSignals signals)
    {
        var clock = Stopwatch.StartNew();
        bool json = args.GetValue(TrainOptions.Json);
        var notes = json ? Console.Error : Console.Out;
        var taskSpec = TaskSpec(args);
        bool sorting = taskSpec.Kind == "sorting";
        int steps = args.Given(TrainOptions.Steps) ?? (sorting ? 1000 : 500), batchSize = args.Given(TrainOptions.BatchSize) ?? (sorting ? 16 : 32);
        var choice = TrainOptions.ReadSchedule(args, batchSize);
        var planRequest = PlanOptions.Auto(args) ? PlanOptions.Request(args, batchSize) : null; // its errors before any work
        string? directory = CheckpointFolder(args);
        var training = TrainingOptions(args, steps, batchSize, sorting);

        TorchNative.EnsureLoaded();
        LanguageModelCheckpointInfo? info = null;
        LoadedCheckpoint? loaded = null;
        if (GptOptions.Resuming(args) && CheckpointStore.Steps(directory!).Count > 0)
            (info, loaded) = LanguageModelCheckpoint.Open(directory!);
        using var disposeLoaded = loaded;
        var task = CreateTask(args, taskSpec, info, loaded?.Path, notes);
        var config = ModelConfig(args, task, notes);
        CheckMemory(config, batchSize);
        // Before anything is built: the library's message names every setting that differs.
        loaded?.CheckModel(LanguageModelCheckpoint.ModelKind, CheckpointManifest.ToJson(config));
        if (loaded is not null) CheckSeed(loaded, training.Seed, notes);

        var balance = BalanceOptions.Counts(args);
        int? ranks = args.Given(TrainOptions.Ranks) ?? (balance is null ? choice.File?.RankCount ?? 2 : null);
        if (args.GetValue(GptOptions.BalanceByTime) && args.IsGiven(BalanceOptions.Balance))
            throw new ArgumentException("--balance-by-time and --balance are both given: --balance-by-time is --balance time; give one of them.");
        // Without a mode: auto, or time with --balance-by-time (the trainer measures on its first batch).
        var fallback = args.GetValue(GptOptions.BalanceByTime) ? BalanceMode.Time : BalanceMode.Auto;
        var pipeline = BalanceOptions.Apply(args, TrainOptions.Pipeline(args, choice, ranks, balance, cluster), fallback) with { Stop = signals.Request };
        if (planRequest is not null) pipeline = PlanCommand.ChooseForGpt(config, task, training, planRequest, PlanOptions.Cache(args), notes, pipeline);
        using var trainer = new LanguageModelTrainer(config, task, pipeline, training);
        FailureInjection.Arm(args.GetValue(ClusterOptions.InjectFailure), trainer.Pipeline, () => trainer.Step + 1);
        if (loaded is not null)
        {
            LanguageModelCheckpoint.Resume(trainer, loaded);
            loaded.Dispose();
        }
        int firstStep = trainer.Step;

        var output = CreateOutput(args, trainer, firstStep);
        output.Start(LanguageModelReport.Header(task, trainer, ScheduleText(trainer, choice)));
        if (loaded is not null) output.Note($"resumed from step {firstStep} ({loaded.Path})");
        else if (GptOptions.Resuming(args)) output.Note($"no checkpoint in {directory} yet: starting from step 0 (--resume-or-start)");
        if (firstStep >= steps)
        {
            output.Note($"the checkpoint is at step {firstStep}, already --steps {steps}: nothing to train.");
            return ExitCodes.Success;
        }

        using var history = new LossHistory(MpiRun.OutputFile(args.GetValue(GptOptions.Log), perRank: false), firstStep);
        var tokenizer = (task as CorpusTask)?.Corpus.Tokenizer.Spec;
        var (summary, lastTrainStep) = Train(args, trainer, taskSpec, tokenizer, directory, output, history, cluster);
        if (MemoryLine.Of(trainer.Pipeline) is { } memory) output.Note(memory);
        double? accuracy = null;
        if (task is SortingLanguageTask sortingTask && trainer.Step > firstStep)
        {
            foreach (var piece in trainer.Pipeline.Stages) piece.eval(); // training is over: no dropout
            accuracy = sortingTask.Task.Accuracy(ids => trainer.Logits(ids), AccuracyProblems, training.Seed);
        }
        output.Finish(LanguageModelReport.Summary(trainer, summary, firstStep, clock.Elapsed, history.Recent,
            accuracy is { } a ? (a, AccuracyProblems) : null));
        WriteFiles(args, trainer, task, history, lastTrainStep, notes);
        if (task is CorpusTask corpus && trainer.Step >= steps && signals.ExitCode is null && args.GetValue(GptOptions.SampleTokens) is > 0 and var sampleTokens)
            WriteSample(trainer, corpus, sampleTokens, training.Seed, directory, json ? Console.Error : Console.Out);
        return signals.ExitCode ?? ExitCodes.Success;
    }

    /// <summary>
    /// Runs the trainer, reporting each step and saving checkpoints; after SIGINT or SIGTERM it stops after a step every
    /// rank agrees on and saves a checkpoint of it (every rank writes its part). Returns the summary and the statistics
    /// of the last step that did not measure the validation loss (which replaces the pipeline's last step).
    /// </summary>
    private static (TrainingSummary?, (StepStatistics Stats, int Step)?) Train(ParseResult args, LanguageModelTrainer trainer,
        LanguageModelTaskSpec taskSpec, TokenizerSpec? tokenizer, string? directory, ILanguageModelOutput output, LossHistory history,
        Mpi.MpiCluster? cluster)
    {
        int every = args.GetValue(GptOptions.CheckpointEvery), saved = trainer.Step;
        (StepStatistics, int)? lastTrainStep = null;
        void Save()
        {
            if (directory is null || trainer.Step == saved) return;
            FailureInjection.BeforeCheckpoint(args.GetValue(ClusterOptions.InjectFailure), cluster, trainer.Step);
            LanguageModelCheckpoint.Save(directory, trainer, taskSpec, tokenizer);
            saved = trainer.Step;
            output.Note($"saved checkpoint {Path.Combine(directory, CheckpointStore.FolderName(saved))}");
        }

        TrainingSummary summary;
        try
        {
            summary = trainer.Run(
                report =>
                {
                    if (report.ValidationLoss is null && trainer.Pipeline.LastStep is { } stats) lastTrainStep = (stats, report.Step);
                    output.Step(report);
                    history.Add(report);
                },
                step =>
                {
                    if (trainer.Pipeline.LastStep is { Moves.Count: > 0 } moved)
                        TimelineFiles.WriteMoves(moved, trainer.Pipeline.Schedule, step, args, args.GetValue(TrainOptions.Json) ? Console.Error : Console.Out);
                    if ((every > 0 && step % every == 0) || step == trainer.Options.Steps) Save();
                });
        }
        catch (NonFiniteGradientException)
        {
            // The step was not taken and every rank stops at it alike: the steps before it are kept.
            Save();
            throw;
        }
        if (trainer.Pipeline.Options.Stop?.Agreed is { } code)
        {
            output.Note($"stopped after step {trainer.Step} ({StopSignals.Name(code)})");
            Save();
        }
        return (summary, lastTrainStep);
    }

    /// <summary>--task and --data: a text file (tiny Shakespeare unless --data names another) or the sorting task.</summary>
    private static LanguageModelTaskSpec TaskSpec(ParseResult args)
    {
        string? data = args.GetValue(GptOptions.Data);
        if (args.GetValue(GptOptions.Task) == "sorting")
        {
            if (data is not null) throw new ArgumentException("--data is for --task text: the sorting task makes its own problems.");
            return LanguageModelTaskSpec.Sorting();
        }
        if (data is null && !File.Exists(GptOptions.BundledCorpus))
            throw new ArgumentException($"the corpus that comes with PipeSharp is missing ({GptOptions.BundledCorpus}): rebuild PipeSharp.Cli, or give a text file with --data.");
        return LanguageModelTaskSpec.Text(data ?? GptOptions.BundledCorpus);
    }

    /// <summary>
    /// After training: a sample of generated text under a line that starts with "sample", continuing a newline with
    /// the seeded sampler that <c>generate</c> uses by default, so the same command prints the same text.
    /// </summary>
    private static void WriteSample(LanguageModelTrainer trainer, CorpusTask task, int tokens, long seed, string? directory, TextWriter output)
    {
        foreach (var piece in trainer.Pipeline.Stages) piece.eval(); // no dropout when generating
        var tokenizer = task.Corpus.Tokenizer;
        int[] prompt;
        try { prompt = tokenizer.Encode("\n"); }
        catch (ArgumentException) { prompt = []; } // a text without line breaks
        if (prompt.Length == 0) prompt = [0];
        const double temperature = 0.8;
        const int topK = 40;
        var sampler = new PipeSharp.Generation.TokenSampler(temperature, topK, unchecked((int)seed));
        var generated = PipeSharp.Generation.TextGenerator.Generate(trainer.Logits, prompt, tokens, trainer.Config.ContextLength, sampler);
        output.WriteLine();
        output.WriteLine($"sample ({tokens} tokens, temperature {temperature}, top-k {topK}, seed {seed}" +
                         (directory is null ? "):" : $"; more with: pipesharp generate --checkpoint {directory} --prompt TEXT --tokens N):"));
        output.WriteLine(tokenizer.Decode(generated));
    }

    /// <summary>The text corpus or the sorting problems; when resuming, checked against the checkpoint's task and tokenizer.</summary>
    private static ILanguageModelTask CreateTask(ParseResult args, LanguageModelTaskSpec spec, LanguageModelCheckpointInfo? info,
        string? checkpointPath, TextWriter notes)
    {
        string? kind = args.GetValue(GptOptions.Tokenizer);
        if (spec.Kind == "sorting" && kind is not null) notes.WriteLine("note: --tokenizer is for --data; the sorting task's tokens are its digits.");
        ITokenizer? tokenizer = null;
        if (info is not null)
        {
            if (info.Task.Kind != spec.Kind)
                throw new CheckpointMismatchException(
                    $"checkpoint {checkpointPath} was trained on {Describe(info.Task)}, but this run trains on {Describe(spec)}: " +
                    "resume with the same task, or use another checkpoint folder.");
            if (info.Tokenizer is { } saved)
            {
                if (kind is not null && kind != saved.Kind)
                    throw new CheckpointMismatchException(
                        $"checkpoint {checkpointPath} uses the {saved.Kind} tokenizer, but --tokenizer is {kind}: leave --tokenizer out when resuming.");
                tokenizer = Tokenizers.FromSpec(saved);
            }
            if (spec.Kind == "text" && info.Task.DataFile != spec.DataFile)
                notes.WriteLine($"note: the checkpoint was trained on {info.Task.DataFile}; continuing on {spec.DataFile} with its vocabulary.");
        }
        return spec.Create(tokenizer, kind ?? Tokenizers.CharKind);
    }

    /// <summary>The model's shape: the sorting task fixes the context and has smaller defaults; a text's context must fit it.</summary>
    private static GptConfig ModelConfig(ParseResult args, ILanguageModelTask task, TextWriter notes)
    {
        bool sorting = task is SortingLanguageTask;
        int context;
        if (task is SortingLanguageTask s)
        {
            context = s.Task.ContextLength;
            if (args.Given(GptOptions.Context) is { } c && c != context)
                notes.WriteLine($"note: --context {c} ignored: the sorting task's sequences are {context} tokens.");
        }
        else
        {
            context = args.Given(GptOptions.Context) ?? 64;
            ((CorpusTask)task).Corpus.CheckContextLength(context);
        }
        var config = new GptConfig(task.VocabularySize, context,
            Layers: args.Given(GptOptions.Layers) ?? (sorting ? 2 : 4),
            Width: args.Given(GptOptions.Width) ?? (sorting ? 64 : 128),
            Heads: args.GetValue(GptOptions.Heads),
            Dropout: args.GetValue(GptOptions.Dropout),
            TieEmbeddings: true);
        config.Check();
        return config;
    }

    private static LanguageModelTrainingOptions TrainingOptions(ParseResult args, int steps, int batchSize, bool sorting)
    {
        double lr = args.Given(TrainOptions.LearningRate) ?? (sorting ? 1e-3 : 6e-3), minLr = args.GetValue(GptOptions.MinLearningRate), clip = args.GetValue(GptOptions.Clip);
        if (minLr > lr)
            throw new ArgumentException($"--min-lr {minLr:G} is above the peak learning rate --lr {lr:G}: the cosine decay goes down to --min-lr.");
        return new LanguageModelTrainingOptions
        {
            Steps = steps,
            BatchSize = batchSize,
            LearningRate = lr,
            MinLearningRate = minLr,
            WarmupSteps = args.Given(GptOptions.Warmup) ?? (sorting ? 100 : 40),
            WeightDecay = args.GetValue(GptOptions.WeightDecay),
            MaxGradNorm = clip > 0 ? clip : null,
            EvalEvery = args.GetValue(GptOptions.EvalEvery),
            EvalBatches = args.GetValue(GptOptions.EvalBatches),
            Seed = args.GetValue(TrainOptions.Seed),
            BalanceByTime = args.GetValue(GptOptions.BalanceByTime),
        };
    }

    /// <summary>
    /// --checkpoint DIR, checked with --resume (there must be a checkpoint to continue from, unless --resume-or-start)
    /// and --checkpoint-every; a fresh run must not mix with older checkpoints.
    /// </summary>
    private static string? CheckpointFolder(ParseResult args)
    {
        string? directory = args.GetValue(GptOptions.Checkpoint);
        bool resume = GptOptions.Resuming(args);
        string resumeName = args.GetValue(GptOptions.Resume) ? GptOptions.Resume.Name : GptOptions.ResumeOrStart.Name;
        if (directory is null)
        {
            if (resume) throw new ArgumentException($"{resumeName} needs --checkpoint DIR: the folder to continue from.");
            if (args.IsGiven(GptOptions.CheckpointEvery)) throw new ArgumentException("--checkpoint-every needs --checkpoint DIR: the folder to save into.");
            return null;
        }
        if (File.Exists(directory)) throw new ArgumentException($"--checkpoint: '{directory}' is a file, not a folder.");
        if (resume && !args.GetValue(GptOptions.ResumeOrStart) && CheckpointStore.Steps(directory).Count == 0)
            throw new ArgumentException(
                $"--resume: {(Directory.Exists(directory) ? $"{directory} holds no checkpoint (a step-N folder with its {CheckpointStore.ManifestName})" : $"the folder {directory} does not exist")}, " +
                "so there is nothing to continue from: check the --checkpoint folder, or use --resume-or-start to start from step 0 when there is no checkpoint yet.");
        if (!resume && CheckpointStore.Steps(directory) is { Count: > 0 } existing)
            throw new ArgumentException(
                $"{directory} already holds checkpoints (steps {string.Join(", ", existing)}): add --resume to continue from " +
                $"step {existing[^1]}, or choose another folder.");
        return directory;
    }

    /// <summary>Batches are a function of the seed and the step: another seed continues on other data.</summary>
    private static void CheckSeed(LoadedCheckpoint loaded, long seed, TextWriter notes)
    {
        if (loaded.Manifest.DataPosition is { ValueKind: JsonValueKind.Object } position
            && position.TryGetProperty("seed", out var saved) && saved.TryGetInt64(out long s) && s != seed)
            notes.WriteLine($"note: the checkpoint was trained with --seed {s}, this run uses {seed}: its batches differ from an uninterrupted run's.");
    }

    /// <summary>
    /// Refuses a run whose activations would clearly not fit in memory (e.g. a huge --context), before anything is
    /// built: roughly 68 bytes per token and width per block (float32 activations, as Korthikanti et al. count them),
    /// 12 per token and vocabulary entry (logits and their gradient), and with dropout the attention weights.
    /// </summary>
    private static void CheckMemory(GptConfig c, int batchSize)
    {
        double tokens = (double)batchSize * c.ContextLength;
        double bytes = tokens * (c.Layers * 68.0 * c.Width + 12.0 * c.VocabularySize);
        if (c.Dropout > 0) bytes += tokens * c.Layers * c.Heads * c.ContextLength * 9.0;
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (bytes > 0.8 * available)
            throw new ArgumentException(
                $"training would hold about {bytes / 1e9:F0} GB of activations (--batch-size {batchSize} x --context " +
                $"{c.ContextLength} tokens, {c.Layers} layers of width {c.Width}), more than this machine's " +
                $"{available / 1e9:F0} GB of memory: use a shorter --context or a smaller --batch-size.");
    }

    private static ILanguageModelOutput CreateOutput(ParseResult args, LanguageModelTrainer trainer, int firstStep)
    {
        if (args.GetValue(TrainOptions.Json)) return new LanguageModelJsonOutput(Console.Out, Console.Error);
        int steps = trainer.Options.Steps, evalEvery = trainer.Options.EvalEvery;
        long tokensPerStep = (long)trainer.Options.BatchSize * trainer.Config.ContextLength;
        int? logEvery = args.Given(TrainOptions.LogEvery);
        if (Console.IsOutputRedirected) return new LanguageModelTextOutput(Console.Out, logEvery ?? 1, steps, tokensPerStep, null);
        return new LanguageModelTextOutput(Console.Out,
            logEvery ?? (evalEvery > 0 ? evalEvery : TrainOptions.TerminalLogInterval(steps - firstStep)), steps, tokensPerStep,
            new ProgressLine(Console.Out, steps, "tokens/s", firstStep));
    }

    private static void WriteFiles(ParseResult args, LanguageModelTrainer trainer, ILanguageModelTask task, LossHistory history,
        (StepStatistics Stats, int Step)? lastTrainStep, TextWriter notes)
    {
        if (MpiRun.OutputFile(args.GetValue(GptOptions.Log), perRank: false) is { } log) notes.WriteLine($"wrote {log}");
        if (MpiRun.OutputFile(args.GetValue(GptOptions.LossCurve), perRank: false) is { } svg && history.Count > 0)
        {
            var c = trainer.Config;
            history.WriteCurve(svg, $"GPT ({c.Layers} layers, width {c.Width}) on {ShortName(task)}: " +
                                    $"{TimelineFiles.Shape(trainer.Pipeline.Schedule.RankCount, trainer.Pipeline.Schedule.StageCount)}, {trainer.Pipeline.Schedule.Name}");
            notes.WriteLine($"wrote {svg}");
        }
        if (lastTrainStep is { } last)
            TimelineFiles.WriteStep(last.Stats, trainer.Pipeline.Schedule, last.Step, MpiRun.OutputFile(args.GetValue(TrainOptions.Trace), perRank: true),
                MpiRun.OutputFile(args.GetValue(TrainOptions.Svg), perRank: true), notes);
    }

    private static string ScheduleText(LanguageModelTrainer trainer, ScheduleChoice choice)
    {
        var s = trainer.Pipeline.Schedule;
        return $"{s.Name}, {TimelineFiles.Shape(s.RankCount, s.StageCount)}" + (choice.File is null ? "" : $", from {choice.Schedule}");
    }

    private static string ShortName(ILanguageModelTask task) =>
        task is CorpusTask corpus ? Path.GetFileName(corpus.Corpus.Source) : "the sorting task";

    private static string Describe(LanguageModelTaskSpec task) => task.Kind == "text" ? $"the text {task.DataFile}" : "the sorting task";
}

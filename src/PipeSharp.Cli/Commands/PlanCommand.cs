using System.CommandLine;
using PipeSharp.Cli.Options;
using PipeSharp.Cli.Output;
using PipeSharp.Models;
using PipeSharp.Native;
using PipeSharp.Planning;
using PipeSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Cli.Commands;

/// <summary>
/// <c>pipesharp plan</c>: profiles a built-in model (through the profile cache) and prints the best layouts the
/// planner finds, as <c>train --plan auto</c> would choose. The work is the library's (<see cref="Planner"/>,
/// <see cref="LanguageModelPlanner"/>); this reads the options and prints the table.
/// </summary>
internal static class PlanCommand
{
    private static readonly Option<string> Model = new Option<string>("--model")
    {
        Description = "The built-in model to plan for: mlp, cnn (as train trains them, with Adam) or gpt (the character GPT of " +
                      "the tiny Shakespeare recipe, shaped by --layers, --width, --heads and --context, with AdamW).",
        DefaultValueFactory = _ => "mlp",
    }.AcceptOnlyFromAmong([.. BuiltInModels.Names, TrainGptCommand.ModelName]);

    public static Command Create()
    {
        var command = new Command("plan",
            "Search ranks x replicas x micro-batches x schedule x recomputation x intra-op threads for the fastest layout of a " +
            "built-in model that fits --memory-per-device, predicted from measured (and cached) per-layer costs, and print the " +
            "best as a table. --ranks, --replicas, --microbatches, --schedule, --recompute and --threads-per-rank keep a setting fixed.")
        {
            Model, PlanOptions.Top, TrainOptions.BatchSize, TrainOptions.Devices, TrainOptions.MemoryPerDevice, TrainOptions.Ranks,
            ClusterOptions.Replicas, TrainOptions.MicroBatches, TrainOptions.Schedule, TrainOptions.Recompute, TrainOptions.ThreadsPerRank,
            TrainOptions.Seed, GptOptions.Layers, GptOptions.Width, GptOptions.Heads, GptOptions.Context,
        };
        foreach (var option in PlanOptions.Shared) command.Options.Add(option);
        command.SetAction(Run);
        return command;
    }

    private static int Run(ParseResult args)
    {
        string model = args.GetValue(Model)!;
        bool gpt = model == TrainGptCommand.ModelName;
        if (!gpt && new Option[] { GptOptions.Layers, GptOptions.Width, GptOptions.Heads, GptOptions.Context }.FirstOrDefault(args.IsGiven) is { } gptOnly)
            throw new ArgumentException($"{gptOnly.Name} is for --model gpt.");
        int batchSize = args.Given(TrainOptions.BatchSize) ?? (gpt ? 32 : 64);
        var request = PlanOptions.Request(args, batchSize);
        var cache = PlanOptions.Cache(args);
        long seed = args.GetValue(TrainOptions.Seed);
        TorchNative.EnsureLoaded();
        IReadOnlyList<PlanCandidate> plans;
        if (gpt)
        {
            var task = LanguageModelTaskSpec.Text(GptOptions.BundledCorpus).Create();
            var config = new GptConfig(task.VocabularySize, args.Given(GptOptions.Context) ?? 64,
                Layers: args.Given(GptOptions.Layers) ?? 4, Width: args.Given(GptOptions.Width) ?? 128, Heads: args.GetValue(GptOptions.Heads),
                Dropout: 0, TieEmbeddings: true);
            config.Check();
            Console.WriteLine($"planning GPT {config.Layers} blocks, width {config.Width}, context {config.ContextLength}, vocabulary {config.VocabularySize}; batch {batchSize} sequences");
            plans = LanguageModelPlanner.Plan(config, task, new LanguageModelTrainingOptions { BatchSize = batchSize, LearningRate = 6e-3, Seed = seed },
                request, cache, Console.Out);
        }
        else
        {
            var spec = BuiltInModels.ForTraining(model);
            Console.WriteLine($"planning {spec.Description}; batch {batchSize}");
            plans = PlanClassifier(spec, seed, ps => optim.Adam(ps, 1e-3), request, cache, Console.Out);
        }
        PlanTable.Write(Console.Out, plans, args.GetValue(PlanOptions.Top), tokens: gpt);
        return ExitCodes.Success;
    }

    /// <summary>For <c>train --model gpt --plan auto</c>: plans, prints the chosen plan, and returns it on top of <paramref name="given"/>.</summary>
    public static Runtime.PipelineOptions ChooseForGpt(GptConfig config, ILanguageModelTask task, LanguageModelTrainingOptions training,
        PlanRequest request, ProfileCache cache, TextWriter notes, Runtime.PipelineOptions given)
    {
        var plan = LanguageModelPlanner.Plan(config, task, training, request, cache, notes)[0];
        notes.WriteLine(PlanTable.Chosen(plan, tokens: true));
        return plan.ToPipelineOptions(given);
    }

    /// <summary>Plans mlp or cnn as <c>train</c> trains them: the spec, its synthetic samples, cross-entropy.</summary>
    public static IReadOnlyList<PlanCandidate> PlanClassifier(BuiltInModel spec, long seed, Func<IEnumerable<TorchSharp.Modules.Parameter>, optim.Optimizer> optimizer,
        PlanRequest request, ProfileCache cache, TextWriter log)
    {
        using var data = new SyntheticClassification(spec.SampleShape, spec.Classes, seed);
        return Planner.Plan(spec.Spec!(seed), samples => data.NextBatch(samples), (o, t) => nn.functional.cross_entropy(o, t), optimizer, request, cache, log);
    }
}

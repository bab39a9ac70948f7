using System.CommandLine;
using System.Globalization;
using PipeSharp.Cli.Options;
using PipeSharp.Cli.Output;
using PipeSharp.Schedules;
using PipeSharp.Tracing;

namespace PipeSharp.Cli.Commands;

/// <summary>
/// <c>pipesharp simulate</c>: makes (or loads) a schedule, checks it and runs it in time with fixed action costs,
/// then prints the makespan, the bubble, the memory peaks and the timeline; optionally draws it as SVG and saves the
/// schedule as an editable file. Nothing is trained, so it needs neither TorchSharp nor a model.
/// </summary>
internal static class SimulateCommand
{
    private static readonly Option<string> Schedule = ScheduleOptions.Schedule(defaultName: null);

    private static readonly Option<int> Ranks = ScheduleOptions.Ranks(
        "Number of ranks (workers); required with a schedule name. " +
        "With several stages per rank, the model is cut into ranks x stages-per-rank stages.");

    private static readonly Option<int> MicroBatches = new("--microbatches", "-m")
    {
        CustomParser = Numbers.AtLeast(1),
        Description = "Micro-batches per step; required with a schedule name.",
        HelpName = "M",
    };

    private static readonly Option<int> StagesPerRank = ScheduleOptions.StagesPerRank();

    private static readonly Option<ActionCosts> Costs = new("--costs")
    {
        Description = "Time in milliseconds of one forward F, full backward B, input-gradient I and weight-gradient W " +
                      "of ONE stage (with several stages per rank: of one stage, not of a whole rank), and optionally C, of one " +
                      "message between ranks. zb-h1 and zb-v also place their actions by these costs. [default: 1,2,1,1]",
        HelpName = "F,B,I,W[,C]",
        CustomParser = result =>
        {
            string text = string.Join(" ", result.Tokens.Select(t => t.Value));
            try
            {
                return ActionCosts.Parse(text);
            }
            catch (FormatException e)
            {
                result.AddError("--" + e.Message); // "--costs '1,x,1,1': 'x' is not a non-negative number."
                return ActionCosts.Unit;
            }
        },
    };

    private static readonly Option<string?> Svg = OutputFile.Create("--svg", "FILE",
        "Also draw the timeline as an SVG picture (one row per rank, a box per action), e.g. for docs.");

    private static readonly Option<string?> SaveSchedule = OutputFile.Create("--save-schedule", "FILE",
        "Also write the schedule as a text file (one line of actions per rank) that you can edit and pass to " +
        "--schedule here or in train.");

    private static readonly Option<int> Width = new("--width")
    {
        CustomParser = Numbers.AtLeast(10),
        Description = "Columns of the text timeline.",
        DefaultValueFactory = _ => 100,
        HelpName = "N",
    };

    public static Command Create()
    {
        var command = new Command("simulate",
            "Predict how a schedule runs, without training: every action takes its --costs time and waits for its " +
            "inputs. Prints the makespan, the bubble (idle share of all ranks), per rank the busy and idle time and " +
            "the peak number of micro-batch activations held, and a text timeline (F/B/I/W; lower case: second chunk).")
        {
            Schedule, Ranks, MicroBatches, StagesPerRank, Costs, Svg, SaveSchedule, Width,
        };
        command.SetAction(Run);
        return command;
    }

    private static int Run(ParseResult args)
    {
        OutputFile.CheckWritable(args.GetValue(Svg), "--svg");
        OutputFile.CheckWritable(args.GetValue(SaveSchedule), "--save-schedule");
        var costs = args.GetValue(Costs) ?? ActionCosts.Unit;
        var schedule = MakeSchedule(args, costs);
        ScheduleValidator.Validate(schedule);
        var result = ScheduleSimulator.Simulate(schedule, costs);

        int ranks = schedule.RankCount, pieces = schedule.StageCount;
        var output = Console.Out;
        output.WriteLine($"schedule       {schedule.Name}");
        output.WriteLine($"ranks          {ranks} (--ranks: one worker each)");
        output.WriteLine($"stages         {pieces} ({(pieces % ranks == 0 ? $"{pieces / ranks}" : "uneven")} per rank)");
        output.WriteLine($"micro-batches  {schedule.MicroBatchCount}");
        output.WriteLine($"costs (ms)     F {N(costs.Forward)}, B {N(costs.Backward)}, I {N(costs.InputGrad)}, " +
                         $"W {N(costs.WeightGrad)} per stage; message {N(costs.Communication)}");
        if (pieces > ranks && pieces % ranks == 0)
            output.WriteLine($"               (a stage is 1/{pieces / ranks} of a rank's layers: to compare with one-stage-per-rank " +
                             $"schedules, divide the costs by {pieces / ranks})");
        output.WriteLine($"makespan       {N(result.Makespan)} ms");
        output.WriteLine($"bubble         {Percent(result.BubbleFraction)} (idle share of {ranks} ranks x {N(result.Makespan)} ms)");
        output.WriteLine();
        WriteRankTable(output, result);
        output.WriteLine();
        // The costs are milliseconds; the renderers take seconds.
        var timeline = TimelineFiles.Scale(result.Timeline, 1e-3);
        output.Write(TimelineText.Render(timeline, ranks, args.GetValue(Width)));

        if (args.GetValue(Svg) is { } svg)
        {
            string title = $"{schedule.Name}: {TimelineFiles.Shape(ranks, pieces)}, {schedule.MicroBatchCount} micro-batches, " +
                           $"bubble {Percent(result.BubbleFraction)}";
            TimelineFiles.WriteSvg(svg, timeline, ranks, title);
            output.WriteLine($"wrote {svg}");
        }
        if (args.GetValue(SaveSchedule) is { } path)
        {
            ScheduleFile.Save(schedule, path);
            output.WriteLine($"wrote {path} (edit it, then: pipesharp simulate --schedule {path}, or train --schedule {path})");
        }
        return ExitCodes.Success;
    }

    /// <summary>The named generator's schedule, or the schedule file's (whose counts must match any given).</summary>
    private static Schedule MakeSchedule(ParseResult args, ActionCosts costs)
    {
        string name = args.GetValue(Schedule)!;
        int? ranks = args.Given(Ranks), microBatches = args.Given(MicroBatches), perRank = args.Given(StagesPerRank);
        if (ScheduleOptions.IsFile(name))
            return ScheduleOptions.ReadFile(name, ranks, microBatches, perRank);
        if (ranks is null || microBatches is null)
            throw new ArgumentException($"give --ranks and --microbatches for schedule '{name}', e.g. --ranks 4 --microbatches 8.");
        return ScheduleGenerators.Create(name, ranks.Value, microBatches.Value, perRank, costs);
    }

    /// <summary>Per rank: busy and idle time, and the activation peaks (W inputs only when a split backward holds more).</summary>
    private static void WriteRankTable(TextWriter output, SimulationResult result)
    {
        bool split = !result.PeakWeightGradInputs.SequenceEqual(result.PeakActivations);
        output.WriteLine($"{"rank",5}  {"busy ms",9}  {"idle ms",9}  {"peak activations",16}" + (split ? $"  {"peak W inputs",13}" : ""));
        for (int r = 0; r < result.RankBusy.Count; r++)
        {
            output.WriteLine($"{r,5}  {N(result.RankBusy[r]),9}  {N(result.RankIdle[r]),9}  {result.PeakActivations[r],16}" +
                             (split ? $"  {result.PeakWeightGradInputs[r],13}" : ""));
        }
        if (split)
            output.WriteLine("(peak activations: held from F until I or B; peak W inputs: held until W, which split backwards delay)");
    }

    private static string N(double value) => value.ToString("0.###", CultureInfo.InvariantCulture);

    private static string Percent(double fraction) => (fraction * 100).ToString("0.0", CultureInfo.InvariantCulture) + "%";
}

using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.Globalization;
using PipeSharp.Cli.Commands;
using PipeSharp.Cli.Output;

// Numbers and help text look the same on every machine: 1234.5, not 1234,5.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.DefaultThreadCurrentUICulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.CurrentUICulture = CultureInfo.InvariantCulture;

// A plain Command rather than RootCommand, which would name itself after the assembly (PipeSharp.Cli).
var root = new Command("pipesharp",
    "PipeSharp: pipeline-parallel training on TorchSharp. Train a built-in model cut into stages on several ranks (among them a GPT " +
    "language model), continue text with a trained GPT (generate) or export it for PyTorch (export), predict how a " +
    "schedule runs (simulate), choose the fastest layout that fits (plan), or check that pipelined training matches single-device training (verify).")
{
    new HelpOption(),
    new VersionOption(),
    TrainCommand.Create(),
    GenerateCommand.Create(),
    ExportCommand.Create(),
    SimulateCommand.Create(),
    PlanCommand.Create(),
    VerifyCommand.Create(),
};
// `pipesharp` alone prints the help (and fails, as no command ran).
root.SetAction(parseResult =>
{
    new HelpAction().Invoke(parseResult);
    return ExitCodes.Usage;
});

var parsed = root.Parse(args);
if (parsed.Action is ParseErrorAction)
    return Errors.ReportParseErrors(parsed);
PipeSharp.Cli.Options.RenamedOptions.NoteOldNames(parsed, Console.Error);

try
{
    return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e) when (Errors.IsExpected(e))
{
    return Errors.Report(e);
}

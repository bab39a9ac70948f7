using System.CommandLine;
using System.Globalization;
using PipeSharp.Partitioning;
using PipeSharp.Runtime;

namespace PipeSharp.Cli.Options;

/// <summary>What <c>--balance</c> asked for: a mode, or the layers of each stage.</summary>
internal sealed record BalanceArgument(BalanceMode? Mode, int[]? Counts);

/// <summary><c>train --balance auto|params|uniform|time|N,N,...</c> and <c>--device-speeds</c>, turned into pipeline options.</summary>
internal static class BalanceOptions
{
    private static readonly Dictionary<string, BalanceMode> Modes = new()
    {
        ["auto"] = BalanceMode.Auto, ["params"] = BalanceMode.Parameters, ["uniform"] = BalanceMode.Uniform, ["time"] = BalanceMode.Time,
    };

    public static readonly Option<BalanceArgument?> Balance = new("--balance")
    {
        Description = "How the model is cut into stages [default: auto]. auto: the exact partitioner on each layer's measured " +
                      "forward + backward time, with the ranks' placement, --device-speeds and --memory-per-device (of the splits predicted " +
                      "within 5% of the fastest, the one best balanced by parameter count); params: by parameter count; uniform: equal layer counts; " +
                      "time: by measured time, stage by stage; or the layers per stage in model order: ranks x stages-per-rank entries " +
                      "adding up to the model's layer count (mlp 8, cnn 11, gpt: --layers + 2, the embeddings and the head being one " +
                      "layer each), e.g. 2,2,2,2,3 (cnn on 5 ranks, the article's split) or 1,1,1,1,1,1,1,1 (zb-v, 4 ranks). " +
                      "Every split trains the same parameters (docs/partitioning.md).",
        HelpName = "auto|params|uniform|time|N,N,...",
        Arity = ArgumentArity.ExactlyOne,
        CustomParser = result =>
        {
            string text = string.Join(" ", result.Tokens.Select(t => t.Value)).Trim();
            if (Modes.TryGetValue(text.ToLowerInvariant(), out var mode)) return new BalanceArgument(mode, null);
            var items = text.Split(',').Select(s => s.Trim()).ToArray();
            var counts = new int[items.Length];
            for (int i = 0; i < items.Length; i++)
            {
                if (!int.TryParse(items[i], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out counts[i]))
                {
                    result.AddError(
                        $"--balance: '{text}' is neither a balance mode nor layer counts: use auto, params, uniform or time, or the layers " +
                        "per stage as whole numbers separated by commas, e.g. --balance 2,2,2,2,3.");
                    return null;
                }
            }
            return new BalanceArgument(null, counts);
        },
    };

    public static readonly Option<double[]?> DeviceSpeeds = new("--device-speeds")
    {
        Description = "(--balance auto) The speed factor of each rank's device, one per rank: 1 for the reference, 0.5 for a device " +
                      "half as fast, e.g. 1,0.5 [default: all 1]. A slower rank gets fewer layers; the trained parameters are the same.",
        HelpName = "X,X,...",
        Arity = ArgumentArity.ExactlyOne,
        CustomParser = result =>
        {
            string text = string.Join(" ", result.Tokens.Select(t => t.Value));
            var items = text.Split(',').Select(s => s.Trim()).ToArray();
            var speeds = new double[items.Length];
            for (int i = 0; i < items.Length; i++)
            {
                if (!double.TryParse(items[i], NumberStyles.Float, CultureInfo.InvariantCulture, out speeds[i]) || !(speeds[i] > 0) || double.IsInfinity(speeds[i]))
                {
                    result.AddError(
                        $"--device-speeds: '{items[i]}' (entry {i + 1} of '{text}') is not a positive number: give one speed factor per rank, " +
                        "e.g. --device-speeds 1,0.5 (rank 1 half as fast as rank 0).");
                    return null;
                }
            }
            return speeds;
        },
    };

    /// <summary>The layer counts given, or null for a mode (or no --balance).</summary>
    public static int[]? Counts(ParseResult args) => args.GetResult(Balance) is null ? null : args.GetValue(Balance)?.Counts;

    /// <summary>
    /// The mode to ask for when no counts are given: the one on the command line, else <paramref name="fallback"/>;
    /// refuses --device-speeds without auto.
    /// </summary>
    public static BalanceMode Mode(ParseResult args, BalanceMode fallback)
    {
        var given = args.GetResult(Balance) is null ? null : args.GetValue(Balance);
        var mode = given?.Mode ?? (given?.Counts is null ? fallback : BalanceMode.Parameters);
        if (args.IsGiven(DeviceSpeeds) && (given?.Counts is not null || mode != BalanceMode.Auto))
            throw new ArgumentException(
                $"--device-speeds is used by --balance auto, but the balance is {(given?.Counts is { } c ? string.Join(",", c) : Name(mode))}: " +
                "use --balance auto (the default) or drop --device-speeds.");
        return mode;
    }

    /// <summary>The options with the balance mode and device speeds of the command line.</summary>
    public static PipelineOptions Apply(ParseResult args, PipelineOptions options, BalanceMode fallback) =>
        options.Balance is not null ? options : options with
        {
            BalanceMode = Mode(args, fallback),
            DeviceSpeeds = args.GetResult(DeviceSpeeds) is null ? null : args.GetValue(DeviceSpeeds),
        };

    /// <summary>The command-line name of a mode.</summary>
    public static string Name(BalanceMode mode) => Modes.First(m => m.Value == mode).Key;
}

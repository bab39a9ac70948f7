using System.Diagnostics;
using System.Globalization;
using PipeSharp.Data;
using PipeSharp.Models;
using PipeSharp.Training;

namespace PipeSharp.Bench.Speed;

/// <summary>
/// The check behind the limit: plain one-thread loops in child processes of this program, each pinned to one core with
/// <c>taskset</c>, first alone on each core, then two at once on cores 0 and 1, started together after their warm-up.
/// If the two at once keep their solo rates, the cores do not contend and the limit is twice the one-thread rate.
/// </summary>
internal static class PinnedPlainLoops
{
    /// <summary>Solo rates on cores 0 and 1, then the rates of the two run at once (tokens/s each).</summary>
    public static (double Solo0, double Solo1, double Pair0, double Pair1)? Measure(int warmup, int steps)
    {
        if (!File.Exists("/usr/bin/taskset") && !File.Exists("/bin/taskset"))
        {
            Console.WriteLine("pinned loops: taskset not found, not measured");
            return null;
        }
        double solo0 = Run([0], warmup, steps)[0];
        double solo1 = Run([1], warmup, steps)[0];
        var pair = Run([0, 1], warmup, steps);
        return (solo0, solo1, pair[0], pair[1]);
    }

    // Starts one child per core, waits until all have warmed up, starts their timed steps together, reads their rates.
    private static double[] Run(int[] cores, int warmup, int steps)
    {
        var children = cores.Select(core => Start(core, warmup, steps)).ToList();
        try
        {
            foreach (var c in children) Expect(c, "ready");
            foreach (var c in children) c.StandardInput.WriteLine("go");
            var rates = children.Select(c => double.Parse(Expect(c, "rate ")[5..], CultureInfo.InvariantCulture)).ToArray();
            foreach (var c in children) c.WaitForExit();
            return rates;
        }
        finally
        {
            foreach (var c in children)
            {
                if (!c.HasExited) c.Kill();
                c.Dispose();
            }
        }
    }

    private static Process Start(int core, int warmup, int steps)
    {
        var info = new ProcessStartInfo("taskset")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add(core.ToString(CultureInfo.InvariantCulture));
        string self = Environment.ProcessPath!;
        info.ArgumentList.Add(self);
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") info.ArgumentList.Add(typeof(PinnedPlainLoops).Assembly.Location);
        foreach (var a in new[] { "--plain-child", "--warmup", warmup.ToString(CultureInfo.InvariantCulture), "--steps", steps.ToString(CultureInfo.InvariantCulture) })
            info.ArgumentList.Add(a);
        return Process.Start(info) ?? throw new InvalidOperationException("could not start a pinned child process");
    }

    private static string Expect(Process child, string prefix)
    {
        while (child.StandardOutput.ReadLine() is { } line)
            if (line.StartsWith(prefix, StringComparison.Ordinal)) return line;
        throw new InvalidOperationException($"a pinned child process ended without printing '{prefix}' (exit code {child.ExitCode}).");
    }

    /// <summary>The child's side: warm up, say "ready", wait for "go", train the timed steps, print "rate R".</summary>
    public static int Child(string[] args, string corpusPath)
    {
        int warmup = BenchFacts.Arg(args, "--warmup", 3), steps = BenchFacts.Arg(args, "--steps", 6);
        var corpus = TextCorpus.Load(corpusPath);
        using var plain = new PlainGptLoop(LimitBench.Config(corpus), new CorpusTask(corpus), LimitBench.Options());
        plain.Measure(warmup, 1);
        Console.WriteLine("ready");
        Console.ReadLine();
        double rate = plain.Measure(steps, 1);
        Console.WriteLine($"rate {rate.ToString("R", CultureInfo.InvariantCulture)}");
        return 0;
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Text;
using PipeSharp.Tests.Mpi;

namespace PipeSharp.Tests.Memory;

/// <summary>
/// The promise at a small size: a GPT (8 blocks of width 512: 25.4M parameters, 102 MB; with gradients and AdamW
/// state 406 MB, plus activations) under a per-process cap of 560 MB that the kernel enforces. One process under the
/// cap is killed by the kernel; 2 MPI ranks, each process under its own 560 MB cap, train it, and their losses equal
/// those of an uncapped single process within 1e-5. Each rank still builds the whole model before it frees the
/// stages it does not train (102 MB for a moment), which the cap leaves room for at this size.
/// </summary>
[Collection(MpiCollection.Name)]
public class CgroupPipelineTests
{
    private const long Cap = 560_000_000;
    private const int Steps = 3;
    private const string Model = "train --model gpt --width 512 --layers 8 --heads 8 --context 64 --batch-size 8 --microbatches 4 " +
                                 "--sample 0 --eval-every 0 --eval-batches 1";

    [CgroupFact]
    public void Two_ranks_each_under_the_cap_train_a_gpt_that_one_process_under_the_cap_cannot()
    {
        if (MpiJob.Launcher is null) return; // needs mpich as well (apt-get install mpich)
        using var folder = new TempFolder();

        // One process, uncapped: the reference trajectory.
        var single = RunCli($"{Model} --ranks 1 --steps {Steps} --log {folder["single.csv"]}");
        Assert.True(single.ExitCode == 0, single.Output);

        // One process under the cap, no budget: the kernel kills it.
        using (var group = MemoryCgroup.TryCreate(Cap, out var why) ?? throw new InvalidOperationException(why))
        {
            var capped = group.Run("dotnet", $"{MpiJob.Cli} {Model} --ranks 1 --steps {Steps}", TimeSpan.FromMinutes(3));
            Assert.True(capped.ExitCode == 137 && group.OomKills == 1, $"one process under {Cap:N0} bytes was not killed by the kernel (exit {capped.ExitCode}):\n{capped.Output}");
        }

        // Two ranks, each process under its own cap.
        var groups = MemoryCgroup.TryCreatePerRank(2, Cap, out string prefix, out var whyNot) ?? throw new InvalidOperationException(whyNot);
        try
        {
            var info = new ProcessStartInfo(MpiJob.Launcher) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { "-np", "2", "/bin/sh", "-c",
                         MemoryCgroup.PerRankScript(prefix, "dotnet", $"{MpiJob.Cli} {Model} --ranks 2 --steps {Steps} --log {folder["two.csv"]}") })
                info.ArgumentList.Add(a);
            info.Environment["CI"] = "true";
            var output = new StringBuilder();
            using var job = MpiJob.StartCollecting(info, output);
            Assert.True(job.WaitForExit(TimeSpan.FromMinutes(4)), output.ToString());
            job.WaitForExit();
            Assert.True(job.ExitCode == 0 && groups.All(g => g.OomKills == 0),
                $"2 ranks under {Cap:N0} bytes each did not train (exit {job.ExitCode}; peaks {string.Join(", ", groups.Select(g => g.MaxUsageBytes.ToString("N0")))}):\n{output}");
            Assert.All(groups, g => Assert.True(g.MaxUsageBytes <= Cap));
        }
        finally
        {
            foreach (var g in groups) g.Dispose();
        }

        var reference = Losses(folder["single.csv"]);
        var split = Losses(folder["two.csv"]);
        Assert.Equal(Steps, reference.Count);
        Assert.Equal(Steps, split.Count);
        for (int i = 0; i < Steps; i++)
            Assert.True(Math.Abs(reference[i] - split[i]) <= 1e-5, $"step {i + 1}: one process {reference[i]}, 2 ranks {split[i]}");
    }

    private static (int ExitCode, string Output) RunCli(string arguments)
    {
        var output = new StringBuilder();
        using var process = MpiJob.StartCli(arguments, output);
        process.WaitForExit(TimeSpan.FromMinutes(3));
        process.WaitForExit();
        return (process.ExitCode, output.ToString());
    }

    private static List<double> Losses(string csv) =>
        File.ReadAllLines(csv).Skip(1).Select(l => double.Parse(l.Split(',')[1], CultureInfo.InvariantCulture)).ToList();
}

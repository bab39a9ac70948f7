using System.Diagnostics;
using System.Globalization;
using System.Text;
using PipeSharp.Tests.Mpi;

namespace PipeSharp.Tests.Memory;

/// <summary>
/// The promise at a small size: a GPT (8 blocks of width 512, context 16: 25.3M parameters, 101 MB; with gradients and
/// AdamW state 404 MB, plus activations) under a per-process cap of 500 MB that the kernel enforces. One process under
/// the cap is refused up front by the budget check (the cap less the program's own memory, <see cref="ProgramItself"/>),
/// and without a budget is killed by the kernel; 2 and 4 MPI ranks, each process under its own 500 MB cap, train it
/// for 20 steps (peaks about 420 and 265 MB), with losses equal to an uncapped single process within 1e-5. Each rank
/// builds only its own layers (the CLI's GPT is built from <c>Gpt.Spec</c>). About a minute and a half.
/// </summary>
[Collection(MpiCollection.Name)]
public class CgroupPipelineTests
{
    private const long Cap = 500_000_000;
    // The CLI's own memory (.NET, libtorch, MPI, freed heap): a group's peak less the predicted peak, measured at
    // 145 MB (4 ranks) to 205 MB (2 ranks) with this model; the budget is the cap less this.
    private const long ProgramItself = 170_000_000;
    private const int Steps = 20;
    private const string Model = "train --model gpt --width 512 --layers 8 --heads 8 --context 16 --batch-size 4 --microbatches 4 " +
                                 "--sample 0 --eval-every 0 --eval-batches 1";

    [CgroupFact]
    public void Two_and_four_ranks_each_under_the_cap_train_a_gpt_that_one_process_under_the_cap_cannot()
    {
        if (MpiJob.Launcher is null) return; // needs mpich as well (apt-get install mpich)
        using var folder = new TempFolder();
        string budget = $"--memory-per-device {Cap - ProgramItself}";

        // One process, uncapped: the reference trajectory.
        var single = RunCli($"{Model} --ranks 1 --steps {Steps} --log {folder["single.csv"]}");
        Assert.True(single.ExitCode == 0, single.Output);

        // One process under the cap, with the budget: refused before its stages are built.
        using (var group = MemoryCgroup.TryCreate(Cap, out var why) ?? throw new InvalidOperationException(why))
        {
            var refused = group.Run("dotnet", $"{MpiJob.Cli} {Model} --ranks 1 --steps {Steps} {budget}", TimeSpan.FromMinutes(2));
            Assert.True(refused.ExitCode != 137 && group.OomKills == 0, $"killed by the kernel instead of refused:\n{refused.Output}");
            Assert.Contains("does not fit its memory budget (parameters, gradients and optimizer state alone, before the stages are built)", refused.Output);
            Assert.Contains("What the same model predicts to fit: Ranks = 2", refused.Output);
        }

        // One process under the cap, no budget: the kernel kills it.
        using (var group = MemoryCgroup.TryCreate(Cap, out var why) ?? throw new InvalidOperationException(why))
        {
            var capped = group.Run("dotnet", $"{MpiJob.Cli} {Model} --ranks 1 --steps {Steps}", TimeSpan.FromMinutes(3));
            Assert.True(capped.ExitCode == 137 && group.OomKills == 1, $"one process under {Cap:N0} bytes was not killed by the kernel (exit {capped.ExitCode}):\n{capped.Output}");
        }

        var reference = Losses(folder["single.csv"]);
        Assert.Equal(Steps, reference.Count);
        foreach (int ranks in new[] { 2, 4 })
        {
            string log = folder[$"ranks{ranks}.csv"];
            RunRanks(ranks, $"{MpiJob.Cli} {Model} --ranks {ranks} --steps {Steps} {budget} --log {log}");
            var split = Losses(log);
            Assert.Equal(Steps, split.Count);
            for (int i = 0; i < Steps; i++)
                Assert.True(Math.Abs(reference[i] - split[i]) <= 1e-5, $"step {i + 1}: one process {reference[i]}, {ranks} ranks {split[i]}");
        }
    }

    // Each MPI rank in its own group under the cap: all train to the end, none killed.
    private static void RunRanks(int ranks, string arguments)
    {
        var groups = MemoryCgroup.TryCreatePerRank(ranks, Cap, out string prefix, out var whyNot) ?? throw new InvalidOperationException(whyNot);
        try
        {
            var info = new ProcessStartInfo(MpiJob.Launcher!) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { "-np", ranks.ToString(CultureInfo.InvariantCulture), "/bin/sh", "-c", MemoryCgroup.PerRankScript(prefix, "dotnet", arguments) })
                info.ArgumentList.Add(a);
            info.Environment["CI"] = "true";
            var output = new StringBuilder();
            using var job = MpiJob.StartCollecting(info, output);
            Assert.True(job.WaitForExit(TimeSpan.FromMinutes(4)), output.ToString());
            job.WaitForExit();
            Assert.True(job.ExitCode == 0 && groups.All(g => g.OomKills == 0),
                $"{ranks} ranks under {Cap:N0} bytes each did not train (exit {job.ExitCode}; peaks {string.Join(", ", groups.Select(g => g.MaxUsageBytes.ToString("N0")))}):\n{output}");
            Assert.All(groups, g => Assert.True(g.MaxUsageBytes <= Cap));
        }
        finally
        {
            foreach (var g in groups) g.Dispose();
        }
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

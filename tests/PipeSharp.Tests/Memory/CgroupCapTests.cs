using PipeSharp.Tests.Mpi;

namespace PipeSharp.Tests.Memory;

/// <summary>A test that needs a memory cgroup; skipped, with the reason, where one cannot be made.</summary>
public sealed class CgroupFactAttribute : FactAttribute
{
    public CgroupFactAttribute()
    {
        if (MemoryCgroup.WhyNot() is { } why) Skip = "cannot create a memory cgroup: " + why;
    }
}

/// <summary>
/// One process under a memory cap the kernel enforces (a child cgroup of the v1 memory controller): a GPT whose
/// parameters, gradients, AdamW state and activations need more than the cap is killed by the kernel when it trains
/// without a budget, and is refused up front by the budget check, before any work, when given the cap as its budget.
/// The model: 4 blocks of width 512 (12.8M parameters, 51 MB; x 4 with gradients and AdamW state: 205 MB), under a cap
/// of 300 MB, where the CLI itself (.NET and libtorch) takes about 160 MB: the budget is what the pipeline may use,
/// the cap less that (140 MB).
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class CgroupCapTests
{
    private const long Cap = 300_000_000;
    private const long ProgramItself = 160_000_000; // the CLI's own memory (.NET, libtorch) measured in a cgroup: 163 MB
    private const string Model = "train --model gpt --ranks 1 --steps 1 --width 512 --layers 4 --heads 8 --context 64 --batch-size 8 " +
                                 "--microbatches 1 --sample 0";

    [CgroupFact]
    public void A_process_over_the_cap_is_killed_by_the_kernel()
    {
        using var group = MemoryCgroup.TryCreate(Cap, out var why) ?? throw new InvalidOperationException(why);
        var (exit, output) = group.Run("dotnet", $"{MpiJob.Cli} {Model}", TimeSpan.FromMinutes(2));
        Assert.True(exit == 137, $"expected the kernel's SIGKILL (exit 137), got {exit}:\n{output}");
        Assert.True(group.MaxUsageBytes > Cap * 99 / 100, $"the group's use peaked at {group.MaxUsageBytes:N0} bytes, below its limit");
        Assert.Equal(1, group.OomKills); // the kernel's OOM killer, in this group
        Assert.DoesNotContain("does not fit its memory budget", output);
    }

    [CgroupFact]
    public void Under_the_same_cap_the_budget_check_refuses_the_plan_before_any_work()
    {
        using var group = MemoryCgroup.TryCreate(Cap, out var why) ?? throw new InvalidOperationException(why);
        var (exit, output) = group.Run("dotnet", $"{MpiJob.Cli} {Model} --memory-per-device {Cap - ProgramItself}", TimeSpan.FromMinutes(2));
        Assert.True(exit != 137, $"killed by the kernel instead of refused:\n{output}");
        Assert.Contains("does not fit its memory budget", output);
        Assert.Contains("rank 0 is predicted to need", output);
        Assert.Contains("parameters, gradients and optimizer state alone, before the stages are built", output);
        Assert.Contains("What the same model predicts to fit: Ranks = 2", output);
        Assert.DoesNotContain("step 1", output); // no step ran
        Assert.True(group.MaxUsageBytes < Cap, $"the refused process used {group.MaxUsageBytes:N0} bytes");
    }
}

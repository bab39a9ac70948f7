using PipeSharp.Native;
using TorchSharp;

namespace PipeSharp.Tests.Memory;

/// <summary>
/// With a memory budget, a freed tensor's storage goes back to the system at once, every time (glibc's mmap threshold
/// fixed once a pipeline has a budget). Without it the second and later 24 MB tensors came from the heap and stayed resident when freed: a
/// process under a cgroup cap grew by about one parameter copy per step and was killed.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class LargeBlockReleaseTests
{
    [Fact]
    public void Once_a_pipeline_has_a_memory_budget_a_freed_large_tensor_is_given_back_to_the_system_every_time()
    {
        if (!OperatingSystem.IsLinux()) return; // glibc only
        using (var model = Models.Mlp.Create(8, 8, 2, 2))
        using (new Runtime.Pipeline(model, new Runtime.PipelineOptions { MemoryPerDevice = [1L << 30] }, EquivalenceTests.CrossEntropy, TestModels.Sgd))
        {
        }
        const long bytes = 24L * 1024 * 1024;
        for (int round = 0; round < 4; round++)
        {
            long alive, freed;
            using (var t = torch.ones(bytes / 4)) // written: its pages are resident
            {
                alive = ResidentBytes();
                Assert.Equal(bytes / 4, t.sum().item<float>());
            }
            freed = ResidentBytes();
            Assert.True(alive - freed >= bytes * 8 / 10,
                $"round {round + 1}: resident {alive:N0} bytes with the tensor, {freed:N0} after it was freed (kept by the process)");
        }
    }

    private static long ResidentBytes() =>
        long.Parse(File.ReadAllText("/proc/self/statm").Split(' ')[1]) * Environment.SystemPageSize;
}

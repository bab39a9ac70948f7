using PipeSharp.Boundaries;
using PipeSharp.Runtime;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Boundaries;

/// <summary>Steps of models that pass several tensors (skips, masks, split backwards) leave no tensor behind.</summary>
[Collection(ProcessWideCollection.Name)]
public class BoundaryMemoryTests
{
    [Theory]
    [InlineData("unet", "1f1b")]
    [InlineData("unet", "zb-v")]
    [InlineData("transformer", "zb-h1")]
    public void Steps_keep_the_number_of_live_tensors_flat(string model, string schedule)
    {
        bool unet = model == "unet";
        var batches = unet ? BoundaryModels.UNetBatches(1) : BoundaryModels.TransformerBatches(1);
        try
        {
            using var pipe = new Pipeline(unet ? BoundaryModels.UNet() : BoundaryModels.Transformer(),
                new PipelineOptions { Ranks = 2, MicroBatches = 4, Schedule = schedule, ThreadsPerRank = 1, Inputs = unet ? null : Models.MaskedTransformer.Inputs },
                BoundaryModels.CrossEntropy, BoundaryModels.Adam);
            var (x, y) = batches[0];
            void Run(int steps)
            {
                for (int i = 0; i < steps; i++)
                {
                    pipe.TrainStep(x, y);
                    if (i % 25 == 0) pipe.Forward(x).Dispose();
                }
            }
            Run(20); // optimizer state
            GC.Collect();
            GC.WaitForPendingFinalizers();
            long before = Tensor.TotalCount;
            Run(200);
            Assert.Equal(before, Tensor.TotalCount); // counted before any collection: a tensor left to the finalizer is a leak
        }
        finally
        {
            BoundaryModels.Dispose(batches);
        }
    }
}

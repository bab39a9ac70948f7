using PipeSharp.Boundaries;
using PipeSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Boundaries;

/// <summary>The example of docs/boundaries.md runs, and its skip goes from stage 0 to stage 2 in one message.</summary>
public class DocExampleTests
{
    private sealed class Down : SetLayer
    {
        private readonly TorchSharp.Modules.Linear linear = nn.Linear(32, 32);
        public Down() : base("down", reads: ["x"], writes: ["x", "skip"]) => RegisterComponents();
        public override TensorSet forward(TensorSet t)
        {
            var h = torch.tanh(linear.call(t["x"]));
            return new TensorSet { ["x"] = h, ["skip"] = h };
        }
    }

    private sealed class Up : SetLayer
    {
        private readonly TorchSharp.Modules.Linear linear = nn.Linear(64, 32);
        public Up() : base("up", reads: ["x", "skip"], writes: ["x"]) => RegisterComponents();
        public override TensorSet forward(TensorSet t) => TensorSet.Of(torch.tanh(linear.call(torch.cat([t["x"], t["skip"]], 1))));
    }

    [Fact]
    public void The_documented_U_shaped_model_trains_and_sends_its_skip_directly()
    {
        manual_seed(5);
        var model = SetModels.Sequential([
            ("down", new Down()),
            ("mid1", nn.Sequential(nn.Linear(32, 32), nn.Tanh())),
            ("mid2", nn.Sequential(nn.Linear(32, 32), nn.Tanh())),
            ("up", new Up()),
            ("head", nn.Linear(32, 10))]);
        using var pipe = new Pipeline(model, new PipelineOptions { Balance = [2, 1, 2], MicroBatches = 4, ThreadsPerRank = 1 },
            (output, target) => nn.functional.cross_entropy(output, target), ps => optim.Adam(ps, 1e-2));
        using var features = randn(16, 32);
        using var labels = randint(0, 10, [16]);
        float first = pipe.TrainStep(features, labels);
        for (int i = 0; i < 20; i++) pipe.TrainStep(features, labels);
        Assert.True(pipe.TrainStep(features, labels) < first / 2, "the model did not learn its 16 samples");
        Assert.Equal(4, pipe.LastStep!.Messages.Count(m => (m.FromRank, m.ToRank) == (0, 2))); // the skip, once per micro-batch
        Assert.Equal(4, pipe.LastStep.Messages.Count(m => (m.FromRank, m.ToRank) == (2, 0))); // and its gradient
        Assert.Equal(4, pipe.LastStep.Messages.Count(m => (m.FromRank, m.ToRank) == (1, 2))); // x only: nothing relayed
    }
}

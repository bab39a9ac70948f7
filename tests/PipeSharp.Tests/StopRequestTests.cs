using PipeSharp.Data;
using PipeSharp.Models;
using PipeSharp.Runtime;
using PipeSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>
/// Stopping at a step boundary in one process: a request is taken up by the next training step, which completes, and
/// the trainer ends after it. (Across MPI processes: Mpi/MpiStopTests.)
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class StopRequestTests
{
    [Fact]
    public void A_request_is_agreed_by_the_next_step_with_the_largest_code_and_stays_agreed()
    {
        var stop = new StopRequest();
        torch.manual_seed(1);
        var model = nn.Sequential(("0", nn.Linear(8, 16)), ("1", nn.ReLU()), ("2", nn.Linear(16, 3)));
        using var pipe = new Pipeline(model, new PipelineOptions { Ranks = 2, MicroBatches = 2, Stop = stop },
            (o, t) => nn.functional.cross_entropy(o, t), ps => optim.SGD(ps, 0.1));
        using var x = torch.randn(8, 8);
        using var y = torch.randint(0, 3, [8]);

        pipe.TrainStep(x, y);
        Assert.Null(stop.Requested);
        Assert.Null(stop.Agreed);

        stop.Request(130);
        stop.Request(143);
        stop.Request(2); // a smaller code does not replace a larger one
        Assert.Equal(143, stop.Requested);
        Assert.Null(stop.Agreed); // not before a step has combined the requests

        var before = model.parameters().Select(p => p.detach().clone()).ToList();
        pipe.TrainStep(x, y);
        Assert.Equal(143, stop.Agreed);
        // The step in which the stop was agreed is a whole step: the optimizer ran.
        Assert.Contains(model.parameters().Zip(before), pair => !pair.First.allclose(pair.Second, rtol: 0, atol: 0));

        stop.Request(200);
        pipe.TrainStep(x, y);
        Assert.Equal(143, stop.Agreed); // the first agreement stays
        Assert.Throws<ArgumentOutOfRangeException>(() => stop.Request(0));
    }

    [Fact]
    public void The_trainer_ends_after_the_step_that_takes_up_a_request_made_during_a_run()
    {
        var stop = new StopRequest();
        var task = LanguageModelTaskSpec.Sorting().Create(null, Tokenizers.CharKind);
        var config = new GptConfig(task.VocabularySize, ((SortingLanguageTask)task).Task.ContextLength, Layers: 2, Width: 32, Heads: 2);
        using var trainer = new LanguageModelTrainer(config, task,
            new PipelineOptions { Ranks = 2, MicroBatches = 2, Stop = stop },
            new LanguageModelTrainingOptions { Steps = 50, BatchSize = 8, EvalEvery = 0, EvalBatches = 1, Seed = 3 });
        var reported = new List<int>();
        var summary = trainer.Run(report =>
        {
            reported.Add(report.Step);
            if (report.Step == 3) stop.Request(143); // after step 3: step 4 takes it up and completes
        });
        Assert.Equal(4, trainer.Step);
        Assert.Equal([1, 2, 3, 4], reported);
        Assert.Equal(4, summary.Steps);
        Assert.Equal(143, stop.Agreed);
        Assert.Equal(0, trainer.Run().Steps); // an agreed stop stays: a second Run takes no step
        Assert.Equal(4, trainer.Step);
    }
}

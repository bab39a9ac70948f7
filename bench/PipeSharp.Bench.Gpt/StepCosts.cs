using System.Diagnostics;
using PipeSharp.Models;
using PipeSharp.Native;
using PipeSharp.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PipeSharp.Bench.Speed;

/// <summary>
/// The per-step work besides forward and backward, each timed alone on this thread with 1 intra-op thread (medians of
/// 30): what the trainer and the pipeline add to every step, on the gradients of one whole batch of the GPT.
/// </summary>
internal static class StepCosts
{
    public static void Print(GptConfig config, Data.TextCorpus corpus)
    {
        torch.set_num_threads(1);
        manual_seed(0);
        using var model = Gpt.Create(config);
        var parameters = ParameterIdentity.Distinct(model.parameters()).ToList();
        using var optimizer = optim.AdamW(parameters, 1e-3);
        var (x, y) = corpus.Batch(Data.CorpusSplit.Train, 0, 16, config.ContextLength, 0);
        double Time(Action work)
        {
            var times = new List<double>();
            for (int k = 0; k < 30; k++)
            {
                using var scope = NewDisposeScope();
                long t0 = Stopwatch.GetTimestamp();
                work();
                times.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            }
            return times.Order().ElementAt(times.Count / 2);
        }
        double step = Time(() =>
        {
            optimizer.zero_grad();
            Gpt.Loss(model.forward(x), y).backward();
        });
        var grads = parameters.Select(p => p.grad!).ToList();
        double precise = Time(() => stack(grads.Select(g => g.to_type(ScalarType.Float64).square().sum()).ToArray()).sum().item<double>());
        double fast = Time(() => stack(grads.Select(g => linalg.vector_norm(g).to_type(ScalarType.Float64).square()).ToArray()).sum().item<double>());
        double clipNorm = Time(() => nn.utils.clip_grad_norm_(parameters, 1e9));
        double clip = Time(() => { using var ng = no_grad(); foreach (var g in grads) g.mul_(1.0); });
        double adam = Time(() => optimizer.step());
        double zero = Time(() => { foreach (var g in grads) g.zero_(); });
        Console.WriteLine($"per-step costs, 1 thread, whole batch ({parameters.Count} parameter tensors, {parameters.Sum(p => p.numel()):N0} values), medians of 30:");
        Console.WriteLine($"  forward + backward {step:F2} ms; gradient norm: float64 squares {precise:F2} ms, float32 norms summed in float64 {fast:F2} ms, " +
                          $"clip_grad_norm_ {clipNorm:F2} ms; scaling the gradients {clip:F2} ms; AdamW step {adam:F2} ms; zeroing the gradients {zero:F2} ms");
        x.Dispose();
        y.Dispose();
    }
}

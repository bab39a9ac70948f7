using System.Diagnostics;
using PipeSharp.Models;
using PipeSharp.Native;
using PipeSharp.Randomness;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Bench.Speed;

/// <summary>
/// The cost of keyed dropout (docs/reproducibility.md): training steps of one GPT on one device with dropout 0.1 drawn
/// keyed (a <see cref="DropoutContext"/> set, as the pipeline sets it), drawn from TorchSharp's generator as nn.Dropout
/// does (no context: the same model, the same explicit attention), and with dropout 0 (scaled_dot_product_attention),
/// in alternating rounds. Usage: dotnet run -c Release --project bench/PipeSharp.Bench.Gpt -- --dropout [--rounds 5 --steps 5]
/// </summary>
internal static class DropoutCost
{
    public static int Run(int rounds, int steps)
    {
        var config = new GptConfig(65, ContextLength: 64, Layers: 4, Width: 128, Heads: 4, Dropout: 0.1);
        const int batch = 12;
        set_num_threads(1);
        manual_seed(0);
        using var dropout = Gpt.Create(config);
        manual_seed(0);
        using var none = Gpt.Create(config with { Dropout = 0 });
        using var optDropout = optim.AdamW(ParameterIdentity.Distinct(dropout.parameters()), 1e-3);
        using var optNone = optim.AdamW(ParameterIdentity.Distinct(none.parameters()), 1e-3);
        var gen = new Generator(1);
        long step = 0;
        double Time(TorchSharp.Modules.Sequential model, optim.Optimizer opt, bool keyed)
        {
            var clock = Stopwatch.StartNew();
            for (int k = 0; k < steps; k++)
            {
                using var scope = NewDisposeScope();
                var tokens = randint(0, 65, [batch, config.ContextLength + 1], generator: gen);
                opt.zero_grad();
                using (keyed ? DropoutContext.Enter(0, step++, 0) : null)
                    Gpt.Loss(model.call(tokens[.., ..^1]), tokens[.., 1..]).backward();
                opt.step();
            }
            return clock.Elapsed.TotalMilliseconds / steps;
        }
        var times = new Dictionary<string, List<double>> { ["keyed"] = new(), ["generator"] = new(), ["none"] = new() };
        Time(dropout, optDropout, true); Time(dropout, optDropout, false); Time(none, optNone, false); // warm-up
        for (int r = 0; r < rounds; r++)
        {
            times["keyed"].Add(Time(dropout, optDropout, true));
            times["generator"].Add(Time(dropout, optDropout, false));
            times["none"].Add(Time(none, optNone, false));
        }
        double Median(string k) { var s = times[k].Order().ToList(); return s[s.Count / 2]; }
        Console.WriteLine($"GPT 4 layers, width 128, context 64, batch {batch}, 1 thread; {rounds} rounds x {steps} steps, median ms per step; load {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine($"dropout 0.1 keyed (KeyedDropout, context set)        {Median("keyed"),8:F1}");
        Console.WriteLine($"dropout 0.1 from TorchSharp's generator (nn.Dropout) {Median("generator"),8:F1}");
        Console.WriteLine($"dropout 0 (scaled_dot_product_attention)             {Median("none"),8:F1}");
        Console.WriteLine($"ratio keyed / generator {Median("keyed") / Median("generator"):F3}; generator / no dropout {Median("generator") / Median("none"):F3}");
        return 0;
    }
}

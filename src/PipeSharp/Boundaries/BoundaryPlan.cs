using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Boundaries;

/// <summary>A tensor a stage takes: its name and the stage that makes it (-1: a pipeline input, read from the micro-batch).</summary>
internal sealed record StageInput(string Name, int Value, int From);

/// <summary>A tensor a stage sends at the end of its forward: its name and the later stages that read it.</summary>
internal sealed record StageOutput(string Name, int Value, IReadOnlyList<int> Consumers);

/// <summary>What crosses the boundaries of one stage: the tensors it takes, those it sends, and (last stage) the loss's input.</summary>
internal sealed record StageBoundary(int Stage, IReadOnlyList<StageInput> Inputs, IReadOnlyList<StageOutput> Outputs, string? Result);

/// <summary>
/// Which tensors cross which stage boundaries, worked out from the layers' declared reads and writes before anything
/// runs. Every tensor a layer reads is the latest one of that name written by an earlier layer, or a pipeline input;
/// one read in a later stage than it is made in is routed straight from its maker to that stage (a skip over any number
/// of stages is one message, not one per stage in between). Pipeline inputs are not sent: every rank has the batch.
/// </summary>
internal sealed class BoundaryPlan
{
    private readonly Dictionary<string, int> _values;

    private BoundaryPlan(IReadOnlyList<string> inputs, IReadOnlyList<string> valueNames, IReadOnlyList<StageBoundary> stages, bool isPlain)
    {
        Inputs = inputs;
        ValueNames = valueNames;
        Stages = stages;
        IsPlain = isPlain;
        _values = valueNames.Select((n, i) => (n, i)).ToDictionary(v => v.n, v => v.i, StringComparer.Ordinal);
        Links = stages.SelectMany(s => s.Inputs.Where(i => i.From >= 0).Select(i => (i.From, s.Stage))).ToHashSet();
    }

    /// <summary>The names of the pipeline's inputs, in order.</summary>
    public IReadOnlyList<string> Inputs { get; }

    /// <summary>Every name that crosses a boundary or is an input; a message names its value by its place here (<c>x</c> is 0).</summary>
    public IReadOnlyList<string> ValueNames { get; }

    /// <summary>Per stage, what it takes and sends.</summary>
    public IReadOnlyList<StageBoundary> Stages { get; }

    /// <summary>(producer, consumer) stage pairs that exchange messages (neighbours only, for a plain model).</summary>
    public IReadOnlySet<(int From, int To)> Links { get; }

    /// <summary>True if every layer maps <c>x</c> to <c>x</c> and the only input is <c>x</c>: the model of one value.</summary>
    public bool IsPlain { get; }

    /// <summary>The number of <paramref name="name"/> in <see cref="ValueNames"/>.</summary>
    public int ValueIndex(string name) => _values[name];

    /// <summary>Plans the boundaries of <paramref name="layers"/> cut by <paramref name="balance"/>.</summary>
    /// <param name="layers">The model's layers, in order.</param>
    /// <param name="layerNames">Their names in the model, for messages (default: their indices).</param>
    /// <param name="balance">Layers per stage.</param>
    /// <param name="inputs">The pipeline inputs' names (default: <c>x</c>).</param>
    /// <exception cref="ArgumentException">A layer reads a tensor nothing makes, or the last layer does not write exactly one.</exception>
    public static BoundaryPlan Create(IReadOnlyList<nn.Module> layers, IReadOnlyList<string>? layerNames, IReadOnlyList<int> balance,
        IReadOnlyList<string>? inputs) =>
        Create(layers.Select((l, i) => LayerSignature.Of(l, i, layerNames?[i])).ToList(), layerNames, balance, inputs);

    /// <summary>Plans the boundaries of layers with the given signatures (what each reads and writes), cut by <paramref name="balance"/>.</summary>
    public static BoundaryPlan Create(IReadOnlyList<LayerSignature> signatures, IReadOnlyList<string>? layerNames, IReadOnlyList<int> balance,
        IReadOnlyList<string>? inputs)
    {
        inputs = CheckInputs(inputs);
        string Describe(int layer) => layerNames is null ? $"layer {layer}" : $"layer {layer} ('{layerNames[layer]}')";

        var valueNames = new List<string> { TensorSet.DefaultName };
        void Name(string n) { if (!valueNames.Contains(n)) valueNames.Add(n); }
        foreach (var n in inputs) Name(n);

        var maker = inputs.ToDictionary(n => n, _ => -1, StringComparer.Ordinal); // name -> stage of its latest writer
        var stageInputs = balance.Select(_ => new List<(string Name, int From)>()).ToList();
        var consumers = balance.Select(_ => new Dictionary<string, List<int>>(StringComparer.Ordinal)).ToList();
        int layer = 0;
        for (int s = 0; s < balance.Count; s++)
        {
            for (int k = 0; k < balance[s]; k++, layer++)
            {
                foreach (var read in signatures[layer].Reads)
                {
                    if (!maker.TryGetValue(read, out int from))
                        throw new ArgumentException(
                            $"{Describe(layer)} reads '{read}', which no earlier layer writes and which is not a pipeline input " +
                            $"(inputs: {string.Join(", ", inputs)}): make an earlier layer write '{read}', or add it to PipelineOptions.Inputs " +
                            "and pass it with every batch.", "model");
                    if (from == s || stageInputs[s].Any(i => i.Name == read)) continue; // made in this stage, or already taken
                    stageInputs[s].Add((read, from));
                    if (from < 0) continue;
                    Name(read);
                    if (!consumers[from].TryGetValue(read, out var list)) consumers[from][read] = list = new List<int>();
                    list.Add(s);
                }
                foreach (var write in signatures[layer].Writes) maker[write] = s;
            }
        }
        var last = signatures[^1];
        if (last.Writes.Count != 1)
            throw new ArgumentException(
                $"the last layer, {Describe(signatures.Count - 1)}, writes {last.Writes.Count} tensors ({string.Join(", ", last.Writes)}) but the loss takes " +
                "one: make the last layer write exactly one tensor, the model's output.", "model");

        int Index(string n) => valueNames.IndexOf(n);
        var stages = Enumerable.Range(0, balance.Count).Select(s => new StageBoundary(
            s,
            stageInputs[s].Select(i => new StageInput(i.Name, Index(i.Name), i.From)).ToList(),
            consumers[s].Select(c => new StageOutput(c.Key, Index(c.Key), c.Value)).ToList(),
            s == balance.Count - 1 ? last.Writes[0] : null)).ToList();
        bool plain = signatures.All(g => g.IsSingle) && inputs is [TensorSet.DefaultName];
        return new BoundaryPlan(inputs, valueNames, stages, plain);
    }

    private static IReadOnlyList<string> CheckInputs(IReadOnlyList<string>? inputs)
    {
        if (inputs is null) return [TensorSet.DefaultName];
        if (inputs.Count == 0)
            throw new ArgumentException("Inputs is empty: name at least one pipeline input, or leave it null for the single input 'x'.", "inputs");
        if (inputs.Any(string.IsNullOrWhiteSpace))
            throw new ArgumentException("Inputs holds an empty name: name every pipeline input.", "inputs");
        var twice = inputs.GroupBy(n => n, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (twice != null) throw new ArgumentException($"Inputs names '{twice.Key}' twice: name each input once.", "inputs");
        return inputs.ToArray();
    }
}

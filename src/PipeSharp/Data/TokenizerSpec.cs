using System.Text.Json.Serialization;

namespace PipeSharp.Data;

/// <summary>
/// Everything needed to rebuild a tokenizer with the same ids, e.g. when resuming or sampling from a checkpoint.
/// Serialises with System.Text.Json as <c>{"Kind":"char","Characters":"\n !..."}</c> or <c>{"Kind":"gpt2"}</c>.
/// </summary>
/// <param name="Kind">The tokenizer kind: <c>"char"</c> or <c>"gpt2"</c>.</param>
/// <param name="Characters">For a char tokenizer, its characters in id order (id i is Characters[i]); otherwise null.</param>
public sealed record TokenizerSpec(
    string Kind,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Characters = null);

using System.Buffers;
using System.Text;
using System.Text.Json;
using PipeSharp.Schedules;

namespace PipeSharp.Tracing;

/// <summary>
/// Writes a timeline in the Chrome trace-event JSON format, which <c>ui.perfetto.dev</c> and <c>chrome://tracing</c>
/// open: one track per rank, one slice per action, and an arrow per message between ranks.
/// </summary>
/// <remarks>
/// <para>
/// Every action becomes a complete event (<c>"ph": "X"</c>) named by its text form (<c>2F0</c>), with the kind as
/// category (<c>Forward</c>, <c>Backward</c>, <c>InputGrad</c>, <c>WeightGrad</c>), <c>tid</c> = rank and
/// <c>ts</c>/<c>dur</c> in microseconds. Metadata events name each thread <c>rank N</c> and keep the ranks in order.
/// All events share <c>pid</c> 1: Perfetto treats pid 0 as the kernel's idle process.
/// </para>
/// <para>
/// Each message becomes a flow: a <c>"ph": "s"</c> event on the sender and a <c>"ph": "f"</c> event with
/// <c>"bp": "e"</c> on the receiver, sharing an id, which viewers draw as an arrow between two slices. A flow event
/// attaches to the slice it falls inside, so its timestamp is placed in the middle of the slice it belongs to: on the
/// sender, the last action that started before the send (the producer: a send follows its compute); on the receiver,
/// the first action still running or starting at the receive (the consumer waits for its input). The exact send and
/// receive times are kept in the flow events' <c>args</c>.
/// </para>
/// </remarks>
public static class ChromeTrace
{
    private const int Pid = 1;

    /// <summary>Writes the trace of <paramref name="timeline"/> and its <paramref name="messages"/> as JSON.</summary>
    /// <param name="timeline">The actions with their start and end, in seconds from the start of the step.</param>
    /// <param name="writer">Where the JSON goes; left open.</param>
    /// <param name="messages">The sends and receives between ranks, drawn as arrows, or <see langword="null"/> for none.</param>
    /// <param name="moves">Layers that moved between ranks after this step (<see cref="StepStatistics.Moves"/>): an instant event at the step's end on the old rank.</param>
    public static void Write(IReadOnlyList<ActionTiming> timeline, TextWriter writer, IReadOnlyList<MessageTiming>? messages = null, IReadOnlyList<LayerMove>? moves = null)
    {
        ArgumentNullException.ThrowIfNull(writer);
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
            WriteTrace(json, timeline, messages, moves);
        writer.Write(Encoding.UTF8.GetString(buffer.WrittenSpan));
        writer.Write('\n');
    }

    /// <summary>Writes the trace of <paramref name="timeline"/> and its <paramref name="messages"/> to a file.</summary>
    /// <param name="path">The file to create or overwrite, e.g. <c>step.trace.json</c>.</param>
    /// <param name="timeline">The actions with their start and end, in seconds from the start of the step.</param>
    /// <param name="messages">The sends and receives between ranks, drawn as arrows, or <see langword="null"/> for none.</param>
    /// <param name="moves">Layers that moved between ranks after this step: an instant event at the step's end on the old rank.</param>
    public static void Save(string path, IReadOnlyList<ActionTiming> timeline, IReadOnlyList<MessageTiming>? messages = null, IReadOnlyList<LayerMove>? moves = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        using var file = File.Create(path);
        using var json = new Utf8JsonWriter(file, new JsonWriterOptions { Indented = true });
        WriteTrace(json, timeline, messages, moves);
    }

    private static void WriteTrace(Utf8JsonWriter json, IReadOnlyList<ActionTiming> timeline, IReadOnlyList<MessageTiming>? messages,
        IReadOnlyList<LayerMove>? moves)
    {
        ArgumentNullException.ThrowIfNull(timeline);
        messages ??= [];
        var byRank = timeline.GroupBy(t => t.Rank)
            .ToDictionary(g => g.Key, g => g.OrderBy(t => t.Start).ThenBy(t => t.End).ToList());
        var ranks = timeline.Select(t => t.Rank).Concat(messages.SelectMany(m => new[] { m.FromRank, m.ToRank })).ToList();
        int lastRank = ranks.Count == 0 ? -1 : ranks.Max();

        json.WriteStartObject();
        json.WriteString("displayTimeUnit", "ms");
        json.WriteStartArray("traceEvents");

        Metadata(json, "process_name", 0, "name", "PipeSharp");
        for (int rank = 0; rank <= lastRank; rank++)
        {
            Metadata(json, "thread_name", rank, "name", $"rank {rank}");
            Metadata(json, "thread_sort_index", rank, "sort_index", rank);
        }

        foreach (var (rank, actions) in byRank.OrderBy(p => p.Key))
        {
            foreach (var t in actions)
            {
                json.WriteStartObject();
                json.WriteString("name", t.Action.ToString());
                json.WriteString("cat", t.Action.Kind.ToString());
                json.WriteString("ph", "X");
                json.WriteNumber("pid", Pid);
                json.WriteNumber("tid", rank);
                json.WriteNumber("ts", Micro(t.Start));
                json.WriteNumber("dur", Math.Max(0, Micro(t.End - t.Start)));
                json.WriteStartObject("args");
                json.WriteString("kind", PipelineAction.Letter(t.Action.Kind).ToString());
                json.WriteNumber("stage", t.Action.Stage);
                json.WriteNumber("micro_batch", t.Action.MicroBatch);
                json.WriteEndObject();
                json.WriteEndObject();
            }
        }

        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            var producer = byRank.TryGetValue(m.FromRank, out var sent) ? Producer(sent, m.SendTime) : null;
            var consumer = byRank.TryGetValue(m.ToRank, out var received) ? Consumer(received, m.ReceiveTime) : null;
            Flow(json, "s", i + 1, m, m.FromRank, producer is { } p ? Middle(p) : m.SendTime);
            Flow(json, "f", i + 1, m, m.ToRank, consumer is { } c ? Middle(c) : m.ReceiveTime);
        }

        double end = TimelineFacts.Makespan(timeline);
        foreach (var move in moves ?? [])
        {
            json.WriteStartObject();
            json.WriteString("name", $"move {move}");
            json.WriteString("cat", "rebalancing");
            json.WriteString("ph", "i");
            json.WriteString("s", "g"); // a line across every rank
            json.WriteNumber("pid", Pid);
            json.WriteNumber("tid", move.FromRank);
            json.WriteNumber("ts", Micro(end));
            json.WriteStartObject("args");
            json.WriteNumber("from_rank", move.FromRank);
            json.WriteNumber("to_rank", move.ToRank);
            json.WriteString("layers", string.Join(",", move.Layers));
            if (move.PredictedGain is { } gain) json.WriteNumber("predicted_gain", gain);
            json.WriteEndObject();
            json.WriteEndObject();
        }

        json.WriteEndArray();
        json.WriteEndObject();
    }

    /// <summary>The last action on the sender that started before <paramref name="sendTime"/>.</summary>
    private static ActionTiming? Producer(List<ActionTiming> actions, double sendTime)
    {
        ActionTiming? found = null;
        foreach (var a in actions)
            if (a.Start < sendTime) found = a;
        return found ?? (actions.Count > 0 ? actions[0] : null);
    }

    /// <summary>The first action on the receiver still running at, or starting after, <paramref name="receiveTime"/>.</summary>
    private static ActionTiming? Consumer(List<ActionTiming> actions, double receiveTime)
    {
        foreach (var a in actions)
            if (a.End > receiveTime) return a;
        return actions.Count > 0 ? actions[^1] : null;
    }

    private static double Middle(ActionTiming a) => (a.Start + a.End) / 2;

    private static void Flow(Utf8JsonWriter json, string phase, int id, MessageTiming m, int rank, double at)
    {
        json.WriteStartObject();
        json.WriteString("name", m.Label ?? "");
        json.WriteString("cat", "message");
        json.WriteString("ph", phase);
        json.WriteNumber("id", id);
        json.WriteNumber("pid", Pid);
        json.WriteNumber("tid", rank);
        json.WriteNumber("ts", Micro(at));
        if (phase == "f") json.WriteString("bp", "e");
        json.WriteStartObject("args");
        json.WriteNumber("from_rank", m.FromRank);
        json.WriteNumber("to_rank", m.ToRank);
        json.WriteNumber("send_us", Micro(m.SendTime));
        json.WriteNumber("receive_us", Micro(m.ReceiveTime));
        json.WriteEndObject();
        json.WriteEndObject();
    }

    private static void Metadata(Utf8JsonWriter json, string name, int tid, string argName, string value)
    {
        MetadataStart(json, name, tid);
        json.WriteString(argName, value);
        json.WriteEndObject();
        json.WriteEndObject();
    }

    private static void Metadata(Utf8JsonWriter json, string name, int tid, string argName, int value)
    {
        MetadataStart(json, name, tid);
        json.WriteNumber(argName, value);
        json.WriteEndObject();
        json.WriteEndObject();
    }

    private static void MetadataStart(Utf8JsonWriter json, string name, int tid)
    {
        json.WriteStartObject();
        json.WriteString("name", name);
        json.WriteString("ph", "M");
        json.WriteNumber("pid", Pid);
        json.WriteNumber("tid", tid);
        json.WriteStartObject("args");
    }

    /// <summary>Seconds to microseconds, rounded to the nanosecond so that 0.001 s is written as 1000, not 999.9999.</summary>
    private static double Micro(double seconds) => Math.Round(seconds * 1e6, 3);
}

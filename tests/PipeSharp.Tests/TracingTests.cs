using System.Globalization;
using System.Text.Json;
using System.Xml.Linq;
using PipeSharp.Schedules;
using PipeSharp.Tracing;

namespace PipeSharp.Tests;

/// <summary>The timeline renderers: SVG picture, text timeline and Chrome trace.</summary>
public class TracingTests
{
    private static readonly XNamespace Svg = "http://www.w3.org/2000/svg";

    /// <summary>
    /// Two ranks, one stage each, one micro-batch, split backward on rank 1, 1 s per action, 4 s in all:
    /// <code>
    /// rank 0 |FF....BB|
    /// rank 1 |..FFIIWW|
    /// </code>
    /// </summary>
    private static readonly ActionTiming[] Timeline =
    [
        new(0, PipelineAction.F(0, 0), 0, 1),
        new(0, PipelineAction.B(0, 0), 3, 4),
        new(1, PipelineAction.F(1, 0), 1, 2),
        new(1, PipelineAction.I(1, 0), 2, 3),
        new(1, PipelineAction.W(1, 0), 3, 4),
    ];

    private static List<XElement> WithClass(XDocument svg, string name, string cls) =>
        svg.Descendants(Svg + name).Where(e => (string?)e.Attribute("class") == cls).ToList();

    [Fact]
    public void Svg_is_xml_with_one_box_and_one_label_per_action()
    {
        var svg = XDocument.Parse(TimelineSvg.Render(Timeline, rankCount: 2, title: "1F1B <split> & co"));

        Assert.Equal(Svg + "svg", svg.Root!.Name);
        Assert.Equal(Timeline.Length, WithClass(svg, "rect", "action").Count);
        Assert.Equal(2, WithClass(svg, "rect", "lane").Count);
        Assert.Equal(4, WithClass(svg, "rect", "legend").Count); // F, B, I, W; one chunk each

        var texts = svg.Descendants(Svg + "text").Select(t => t.Value).ToList();
        Assert.Contains("1F1B <split> & co", texts);
        Assert.Contains("rank 0", texts);
        Assert.Contains("rank 1", texts);
        Assert.Equal(Enumerable.Repeat("0", Timeline.Length), WithClass(svg, "text", "label").Select(t => t.Value));
        Assert.Contains(texts, t => t.Contains("makespan 4000 ms"));
    }

    [Fact]
    public void Svg_boxes_are_placed_by_time_and_rank_and_coloured_by_kind()
    {
        var svg = XDocument.Parse(TimelineSvg.Render(Timeline, rankCount: 2));
        var boxes = WithClass(svg, "rect", "action");
        double X(XElement e) => double.Parse((string)e.Attribute("x")!, CultureInfo.InvariantCulture);
        double Y(XElement e) => double.Parse((string)e.Attribute("y")!, CultureInfo.InvariantCulture);
        double W(XElement e) => double.Parse((string)e.Attribute("width")!, CultureInfo.InvariantCulture);
        XElement Box(string action) => boxes.Single(b => b.Element(Svg + "title")!.Value.StartsWith(action + " "));

        // The makespan spans 1000 px, so each 1 s action is 250 px wide and starts 250 px after the previous one.
        Assert.All(boxes, b => Assert.Equal(250, W(b), 1));
        Assert.Equal(250, X(Box("1F0")) - X(Box("0F0")), 1);
        Assert.Equal(750, X(Box("0B0")) - X(Box("0F0")), 1);
        Assert.True(Y(Box("1F0")) > Y(Box("0F0")));
        Assert.Equal(Y(Box("1F0")), Y(Box("1W0")));

        var fills = new[] { "0F0", "0B0", "1I0", "1W0" }.Select(a => (string)Box(a).Attribute("fill")!).ToList();
        Assert.Equal(4, fills.Distinct().Count());
        Assert.Equal((string)Box("0F0").Attribute("fill")!, (string)Box("1F0").Attribute("fill")!);
    }

    [Fact]
    public void Svg_marks_second_chunks_with_a_shade_and_the_stage()
    {
        // Interleaved placement on 2 ranks: stages 0 and 2 on rank 0, 1 and 3 on rank 1.
        ActionTiming[] timeline =
        [
            new(0, PipelineAction.F(0, 0), 0, 1),
            new(1, PipelineAction.F(1, 0), 1, 2),
            new(0, PipelineAction.F(2, 0), 2, 3),
            new(1, PipelineAction.F(3, 0), 3, 4),
        ];
        var svg = XDocument.Parse(TimelineSvg.Render(timeline, rankCount: 2));
        var boxes = WithClass(svg, "rect", "action");

        Assert.NotEqual((string)boxes[0].Attribute("fill")!, (string)boxes[1].Attribute("fill")!); // rank 0: stage 0 vs 2
        Assert.Equal(["s0:0", "s2:0", "s1:0", "s3:0"], WithClass(svg, "text", "label").Select(t => t.Value));
        Assert.Equal(2, WithClass(svg, "rect", "legend").Count); // F in two shades
    }

    [Fact]
    public void Svg_leaves_narrow_boxes_unlabelled()
    {
        ActionTiming[] timeline = [new(0, PipelineAction.F(0, 12), 0, 1), new(0, PipelineAction.B(0, 12), 1, 1.001)];
        var svg = XDocument.Parse(TimelineSvg.Render(timeline, rankCount: 1));

        Assert.Equal(2, WithClass(svg, "rect", "action").Count);
        Assert.Equal(["12"], WithClass(svg, "text", "label").Select(t => t.Value));
    }

    [Fact]
    public void Text_has_one_line_per_rank_with_the_letters_where_the_actions_run()
    {
        var lines = TimelineText.Render(Timeline, rankCount: 2, width: 8).Split('\n', StringSplitOptions.RemoveEmptyEntries);

        Assert.Equal(3, lines.Length);
        Assert.Equal("rank 0 |FF....BB|", lines[0]);
        Assert.Equal("rank 1 |..FFIIWW|", lines[1]);
        Assert.Equal("makespan 4 s, 1 column = 500 ms", lines[2]);
    }

    [Fact]
    public void Text_shows_idle_time_and_idle_ranks_as_dots()
    {
        ActionTiming[] timeline = [new(0, PipelineAction.F(0, 0), 0, 0.001), new(1, PipelineAction.F(1, 0), 0.001, 0.002)];
        var lines = TimelineText.Render(timeline, rankCount: 3, width: 10).Split('\n', StringSplitOptions.RemoveEmptyEntries);

        Assert.Equal("rank 0 |FFFFF.....|", lines[0]);
        Assert.Equal("rank 1 |.....FFFFF|", lines[1]);
        Assert.Equal("rank 2 |..........|", lines[2]);
        Assert.Equal("makespan 2 ms, 1 column = 200 us", lines[3]);
    }

    [Fact]
    public void Text_writes_second_chunks_in_lower_case()
    {
        ActionTiming[] timeline = [new(0, PipelineAction.F(0, 0), 0, 1), new(0, PipelineAction.B(2, 0), 1, 2)];
        Assert.StartsWith("rank 0 |FFbb|", TimelineText.Render(timeline, rankCount: 2, width: 4));
    }

    [Fact]
    public void Renderers_refuse_actions_on_ranks_outside_the_count()
    {
        ActionTiming[] timeline = [new(2, PipelineAction.F(2, 0), 0, 1)];
        Assert.Contains("rank 2", Assert.Throws<ArgumentException>(() => TimelineText.Render(timeline, 2)).Message);
        Assert.Throws<ArgumentException>(() => TimelineSvg.Render(timeline, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => TimelineText.Render(Timeline, 2, width: 0));
    }

    [Fact]
    public void Chrome_trace_has_one_complete_event_per_action_in_microseconds()
    {
        var writer = new StringWriter();
        ChromeTrace.Write(Timeline, writer);
        using var doc = JsonDocument.Parse(writer.ToString());
        var events = doc.RootElement.GetProperty("traceEvents").EnumerateArray().ToList();

        var slices = events.Where(e => e.GetProperty("ph").GetString() == "X").ToList();
        Assert.Equal(Timeline.Length, slices.Count);
        foreach (var t in Timeline)
        {
            var e = slices.Single(s => s.GetProperty("name").GetString() == t.Action.ToString());
            Assert.Equal(t.Start * 1e6, e.GetProperty("ts").GetDouble(), 3);
            Assert.Equal((t.End - t.Start) * 1e6, e.GetProperty("dur").GetDouble(), 3);
            Assert.Equal(t.Rank, e.GetProperty("tid").GetInt32());
            Assert.Equal(t.Action.Kind.ToString(), e.GetProperty("cat").GetString());
        }

        var threadNames = events
            .Where(e => e.GetProperty("ph").GetString() == "M" && e.GetProperty("name").GetString() == "thread_name")
            .ToDictionary(e => e.GetProperty("tid").GetInt32(), e => e.GetProperty("args").GetProperty("name").GetString());
        Assert.Equal(new Dictionary<int, string?> { [0] = "rank 0", [1] = "rank 1" }, threadNames);
    }

    [Fact]
    public void Chrome_trace_draws_messages_as_flows_between_the_producer_and_the_consumer()
    {
        MessageTiming[] messages =
        [
            new(0, 1, "act 0→1 mb 0", SendTime: 1, ReceiveTime: 1),
            new(1, 0, "grad 1→0 mb 0", SendTime: 3, ReceiveTime: 3),
        ];
        var writer = new StringWriter();
        ChromeTrace.Write(Timeline, writer, messages);
        using var doc = JsonDocument.Parse(writer.ToString());
        var flows = doc.RootElement.GetProperty("traceEvents").EnumerateArray()
            .Where(e => e.GetProperty("ph").GetString() is "s" or "f").ToList();

        Assert.Equal(4, flows.Count);
        var first = flows.Where(e => e.GetProperty("name").GetString() == "act 0→1 mb 0").ToList();
        var start = first.Single(e => e.GetProperty("ph").GetString() == "s");
        var finish = first.Single(e => e.GetProperty("ph").GetString() == "f");
        Assert.Equal(start.GetProperty("id").GetInt32(), finish.GetProperty("id").GetInt32());
        Assert.Equal("e", finish.GetProperty("bp").GetString());
        // Bound inside 0F0 [0, 1 s) on rank 0 and inside 1F0 [1, 2 s) on rank 1.
        Assert.Equal(0, start.GetProperty("tid").GetInt32());
        Assert.InRange(start.GetProperty("ts").GetDouble(), 1, 999_999);
        Assert.Equal(1, finish.GetProperty("tid").GetInt32());
        Assert.InRange(finish.GetProperty("ts").GetDouble(), 1_000_001, 1_999_999);

        // The gradient leaves 1I0 [2, 3 s) on rank 1 and arrives for 0B0 [3, 4 s) on rank 0.
        var grad = flows.Where(e => e.GetProperty("name").GetString() == "grad 1→0 mb 0").ToList();
        Assert.InRange(grad.Single(e => e.GetProperty("ph").GetString() == "s").GetProperty("ts").GetDouble(), 2_000_001, 2_999_999);
        Assert.InRange(grad.Single(e => e.GetProperty("ph").GetString() == "f").GetProperty("ts").GetDouble(), 3_000_001, 3_999_999);
        Assert.NotEqual(start.GetProperty("id").GetInt32(), grad[0].GetProperty("id").GetInt32());
    }

    [Fact]
    public void Chrome_trace_saves_to_a_file()
    {
        string path = Path.Combine(Path.GetTempPath(), $"pipesharp-trace-{Guid.NewGuid():N}.json");
        try
        {
            ChromeTrace.Save(path, Timeline);
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            Assert.Equal(Timeline.Length,
                doc.RootElement.GetProperty("traceEvents").EnumerateArray().Count(e => e.GetProperty("ph").GetString() == "X"));
        }
        finally
        {
            File.Delete(path);
        }
    }
}

using PipeSharp.Schedules;

namespace PipeSharp.Tests;

public class ScheduleTests
{
    public static TheoryData<string, int, int> Grid()
    {
        var data = new TheoryData<string, int, int>();
        foreach (var name in ScheduleGenerators.Names)
            for (int p = 1; p <= 8; p++)
                foreach (int m in new[] { 1, 2, 3, 5, 8, 13, 16 })
                    data.Add(name, p, m);
        return data;
    }

    [Theory]
    [MemberData(nameof(Grid))]
    public void Every_generated_schedule_is_valid_and_simulates(string name, int ranks, int microBatches)
    {
        if (name == "interleaved" && microBatches % ranks != 0)
        {
            var e = Assert.Throws<ArgumentException>(() => ScheduleGenerators.Create(name, ranks, microBatches));
            Assert.Contains("multiple of the number of ranks", e.Message);
            return;
        }
        var schedule = ScheduleGenerators.Create(name, ranks, microBatches);
        ScheduleValidator.Validate(schedule);
        Assert.Equal(ranks, schedule.RankCount);
        int chunks = ScheduleGenerators.StagesPerRank(name, null);
        Assert.Equal(ranks * chunks, schedule.StageCount);
        int perAction = name.StartsWith("zb") ? 3 : 2; // F + B, or F + I + W
        Assert.All(schedule.RankActions, a => Assert.Equal(perAction * chunks * microBatches, a.Count));

        var result = ScheduleSimulator.Simulate(schedule, ActionCosts.Unit);
        Assert.Equal(schedule.RankActions.Sum(a => a.Count), result.Timeline.Count);
        Assert.InRange(result.BubbleFraction, 0, 1);
    }

    // Micro-batches whose activations a stage holds at most (forwarded, not yet backwarded).
    private static int PeakInFlight(IReadOnlyList<PipelineAction> actions)
    {
        int live = 0, peak = 0;
        foreach (var a in actions)
        {
            live += a.Kind == ActionKind.Forward ? 1 : -1;
            peak = Math.Max(peak, live);
        }
        return peak;
    }

    [Theory]
    [InlineData(4, 8)]
    [InlineData(5, 3)]
    [InlineData(2, 16)]
    public void OneFOneB_holds_at_most_p_minus_s_micro_batches_and_GPipe_holds_all(int p, int m)
    {
        var ofob = ScheduleGenerators.OneForwardOneBackward(p, m);
        var gpipe = ScheduleGenerators.GPipe(p, m);
        for (int s = 0; s < p; s++)
        {
            Assert.Equal(Math.Min(p - s, m), PeakInFlight(ofob.RankActions[s]));
            Assert.Equal(m, PeakInFlight(gpipe.RankActions[s]));
        }
    }

    [Fact]
    public void OneFOneB_has_the_textbook_shape()
    {
        var s = ScheduleGenerators.OneForwardOneBackward(3, 4);
        Assert.Equal("0F0 0F1 0F2 0B0 0F3 0B1 0B2 0B3", string.Join(' ', s.RankActions[0]));
        Assert.Equal("1F0 1F1 1B0 1F2 1B1 1F3 1B2 1B3", string.Join(' ', s.RankActions[1]));
        Assert.Equal("2F0 2B0 2F1 2B1 2F2 2B2 2F3 2B3", string.Join(' ', s.RankActions[2]));
    }

    [Fact]
    public void Action_text_form_round_trips()
    {
        var a = PipelineAction.B(12, 3);
        Assert.Equal("12B3", a.ToString());
        Assert.Equal(a, PipelineAction.Parse("12B3"));
        Assert.Throws<FormatException>(() => PipelineAction.Parse("F12"));
    }

    private static Schedule Hand(params string[] ranks) =>
        new("hand", ranks.Length, ranks[0].Split(' ').Count(t => t.Contains('F')), Enumerable.Range(0, ranks.Length).ToArray(),
            ranks.Select(r => (IReadOnlyList<PipelineAction>)r.Split(' ').Select(PipelineAction.Parse).ToList()).ToList());

    [Fact]
    public void Validator_accepts_a_hand_written_schedule()
    {
        ScheduleValidator.Validate(Hand("0F0 0F1 0B0 0B1", "1F0 1B0 1F1 1B1"));
    }

    [Fact]
    public void Validator_finds_a_deadlock_and_points_at_it()
    {
        // Stage 0 waits for micro-batch 1's gradient before sending micro-batch 1's activation.
        var e = Assert.Throws<InvalidScheduleException>(() => Validate("0F0 0B1 0F1 0B0", "1F0 1F1 1B0 1B1"));
        Assert.Contains("deadlock", e.Message);
        Assert.Contains("[0B1]", e.Message);
        Assert.Contains("rank 0 waits at 0B1 for 0F1", e.Message);
    }

    [Fact]
    public void Validator_finds_a_missing_action()
    {
        var e = Assert.Throws<InvalidScheduleException>(() => Validate("0F0 0F1 0B0 0B1", "1F0 1B0 1F1"));
        Assert.Contains("backward of stage 1, micro-batch 1 is missing", e.Message);
    }

    [Fact]
    public void Validator_finds_a_duplicate_action()
    {
        var e = Assert.Throws<InvalidScheduleException>(() => Validate("0F0 0F1 0B0 0B1 0B1", "1F0 1B0 1F1 1B1"));
        Assert.Contains("0B1 appears more than once", e.Message);
    }

    [Fact]
    public void Validator_finds_an_action_on_the_wrong_rank()
    {
        var e = Assert.Throws<InvalidScheduleException>(() => Validate("0F0 0F1 0B0 0B1 1F0", "1F1 1B0 1B1"));
        Assert.Contains("action 1F0 is on rank 0, but stage 1 is placed on rank 1", e.Message);
    }

    [Fact]
    public void Validator_accepts_split_backwards_and_checks_I_before_W()
    {
        ScheduleValidator.Validate(Hand("0F0 0F1 0I0 0I1 0W0 0W1", "1F0 1I0 1F1 1I1 1W1 1W0"));
        var e = Assert.Throws<InvalidScheduleException>(() => Validate("0F0 0W0 0I0", "1F0 1I0 1W0"));
        Assert.Contains("rank 0 waits at 0W0 for 0I0", e.Message);
        var mixed = Assert.Throws<InvalidScheduleException>(() => Validate("0F0 0B0 0I0 0W0", "1F0 1B0"));
        Assert.Contains("also a split one", mixed.Message);
    }

    [Fact]
    public void Schedule_file_round_trips_and_reports_bad_lines()
    {
        var zbv = ScheduleGenerators.Create("zb-v", 3, 6);
        var text = ScheduleFile.Format(zbv);
        var back = ScheduleFile.Parse(text);
        Assert.Equal(zbv.StageToRank, back.StageToRank);
        Assert.Equal(zbv.MicroBatchCount, back.MicroBatchCount);
        for (int r = 0; r < zbv.RankCount; r++) Assert.Equal(zbv.RankActions[r], back.RankActions[r]);
        ScheduleValidator.Validate(back);

        var e = Assert.Throws<FormatException>(() => ScheduleFile.Parse("stages: 2\nrank 0: 0F0 0X0\n", "my.txt"));
        Assert.Contains("my.txt, line 2", e.Message);
        Assert.Contains("0X0", e.Message);
    }

    private static void Validate(params string[] ranks) => ScheduleValidator.Validate(Hand(ranks));
}

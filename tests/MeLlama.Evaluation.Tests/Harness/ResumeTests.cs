using System.Text;
using MeLlama.Evaluation.Harness;
using MeLlama.Evaluation.Tasks;
using MeLlama.TestSupport;
using Serilog.Core;

namespace MeLlama.Evaluation.Tests.Harness;

public class ResumeTests
{
    static TaskDefinition Task => new()
    {
        Name = "toy", AnswerKind = AnswerKind.Choice,
        Dataset = new DatasetSpec { Format = DatasetFormat.Instruction, Test = "unused" },
        Prompt = "Q{id}: {question}", Labels = ["yes", "no"],
    };

    static TaskData Data(int n) => new(
        Enumerable.Range(0, n).Select(i => new EvalItem($"i{i}", new Dictionary<string, string> { ["id"] = $"i{i}", ["question"] = $"q{i}" },
            ["yes", "no"], ["yes", "no"], i % 3 == 0 ? "no" : "yes")).ToList(), [], "none");

    static string Answer(string prompt) => prompt.Contains("Q2:", StringComparison.Ordinal) || prompt.Contains("Q5:", StringComparison.Ordinal) ? "no" : "yes";

    [Fact]
    public void Interrupted_run_continues_where_it_stopped_and_ends_with_the_same_result()
    {
        using var dir = new TempDir();
        var settings = new EvalSettings { Mode = EvalMode.Generate, BatchSize = 2, BootstrapResamples = 100 };

        var crashing = new FakeGenerator(Answer) { FailAfterCalls = 2 };
        using (var cache = new PredictionCache(dir["p.jsonl"], restricted: false))
            Assert.Throws<IOException>(() => new EvalRunner(null, crashing, Logger.None).Run(Task, Data(7), settings, cache));
        Assert.Equal(4, File.ReadAllLines(dir["p.jsonl"]).Length);   // two finished batches were kept

        var resumed = new FakeGenerator(Answer);
        TaskResult result;
        using (var cache = new PredictionCache(dir["p.jsonl"], restricted: false))
        {
            Assert.Equal(4, cache.LoadedCount);
            result = new EvalRunner(null, resumed, Logger.None).Run(Task, Data(7), settings, cache);
        }
        Assert.Equal(3, resumed.Prompts);   // only i4, i5, i6
        Assert.DoesNotContain(resumed.Seen, r => r.Prompt.Contains("Q0:", StringComparison.Ordinal));
        Assert.Equal(4, result.FromCache);
        Assert.Equal(3, result.Computed);

        var fresh = new FakeGenerator(Answer);
        using var dir2 = new TempDir();
        using var cache2 = new PredictionCache(dir2["p.jsonl"], restricted: false);
        var uninterrupted = new EvalRunner(null, fresh, Logger.None).Run(Task, Data(7), settings, cache2);
        Assert.Equal(uninterrupted.Metrics, result.Metrics);

        // A third run has nothing left to do.
        var idle = new FakeGenerator(Answer);
        using var cache3 = new PredictionCache(dir["p.jsonl"], restricted: false);
        Assert.Equal(7, new EvalRunner(null, idle, Logger.None).Run(Task, Data(7), settings, cache3).FromCache);
        Assert.Equal(0, idle.Calls);
    }

    [Fact]
    public void Changing_model_or_seed_does_not_reuse_cached_answers()
    {
        using var dir = new TempDir();
        using var cache = new PredictionCache(dir["p.jsonl"], restricted: false);
        var settings = new EvalSettings { Mode = EvalMode.Generate, BootstrapResamples = 0 };
        new EvalRunner(null, new FakeGenerator(Answer, "model-1"), Logger.None).Run(Task, Data(4), settings, cache);
        var other = new FakeGenerator(Answer, "model-2");
        Assert.Equal(4, new EvalRunner(null, other, Logger.None).Run(Task, Data(4), settings, cache).Computed);
        var reseeded = new FakeGenerator(Answer, "model-1");
        Assert.Equal(4, new EvalRunner(null, reseeded, Logger.None).Run(Task, Data(4), settings with { Seed = 99 }, cache).Computed);
        var same = new FakeGenerator(Answer, "model-1");
        Assert.Equal(0, new EvalRunner(null, same, Logger.None).Run(Task, Data(4), settings, cache).Computed);
    }

    [Fact]
    public void A_torn_last_line_is_cut_off_and_appends_stay_well_formed()
    {
        using var dir = new TempDir();
        string path = dir["p.jsonl"];
        using (var cache = new PredictionCache(path, restricted: false))
            new EvalRunner(null, new FakeGenerator(Answer), Logger.None).Run(Task, Data(3), new EvalSettings { Mode = EvalMode.Generate, BootstrapResamples = 0 }, cache);
        File.AppendAllText(path, "{\"key\":\"abc\",\"task\":\"to", Encoding.UTF8);   // killed mid-write

        using (var cache = new PredictionCache(path, restricted: false))
        {
            Assert.Equal(3, cache.LoadedCount);
            Assert.Equal(1, cache.DroppedTornLines);
            var result = new EvalRunner(null, new FakeGenerator(Answer), Logger.None).Run(Task, Data(5), new EvalSettings { Mode = EvalMode.Generate, BootstrapResamples = 0 }, cache);
            Assert.Equal(2, result.Computed);
        }
        var lines = File.ReadAllLines(path);
        Assert.Equal(5, lines.Length);
        Assert.All(lines, l => System.Text.Json.JsonDocument.Parse(l).Dispose());
    }

    [SkippableFact]
    public void Cache_for_credentialed_data_is_owner_only_and_locked()
    {
        if (OperatingSystem.IsWindows()) throw new SkipException("Unix file modes");
        using var dir = new TempDir();
        using var cache = new PredictionCache(dir["p.jsonl"], restricted: true);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(dir["p.jsonl"]));
        Assert.Throws<IOException>(() => new PredictionCache(dir["p.jsonl"], restricted: true));
    }
}

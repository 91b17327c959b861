using System.Text.Json;
using MeLlama.Evaluation.Harness;
using MeLlama.Evaluation.Reporting;
using MeLlama.TestSupport;
using Serilog.Core;

namespace MeLlama.Evaluation.Tests.Harness;

/// <summary>
/// The built-in NER, multi-label, summarisation and extractive-QA task files on small user-supplied files
/// in the clinicalnlplab layout, answered by a scripted generator; expected metrics worked out by hand.
/// </summary>
public class InstructionTasksTests
{
    static void WriteJsonl(string path, params object[] records)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllLines(path, records.Select(r => JsonSerializer.Serialize(r)));
    }

    static readonly Dictionary<string, string> Script = new()
    {
        ["NER-1"] = "Aspirin, TREATMENT\nchest pain, test",
        ["NER-2"] = "ct scan, test\nfever, problem",
        ["HOC-1"] = "sustaining proliferative signaling and evading growth suppressors",
        ["HOC-2"] = "evading growth suppressors",
        ["SUM-1"] = "testing two",
        ["QA-1"] = "The left ventricle.\nIt is enlarged.",
        ["QA-2"] = "metformin",
    };

    static string Answer(string prompt) => Script.Single(kv => prompt.Contains(kv.Key, StringComparison.Ordinal)).Value;

    static double Metric(EvalReport report, string task, string metric) =>
        report.Tasks.Single(t => t.Task == task).Metrics.Single(m => m.Name == metric).Value;

    [Fact]
    public void Entity_multilabel_summary_and_extractive_tasks_score_as_computed_by_hand()
    {
        using var dir = new TempDir();
        string data = dir["data"];
        string[] hallmarks = ["sustaining proliferative signaling", "evading growth suppressors", "inducing angiogenesis"];
        WriteJsonl(Path.Combine(data, "eval/clinicalnlplab/i2b2_test.jsonl"),
            new { id = "n1", query = "NER-1 Extract entities.", answer = "aspirin, treatment\nchest pain, problem" },
            new { id = "n2", query = "NER-2 Extract entities.", answer = "ct scan, test" });
        WriteJsonl(Path.Combine(data, "eval/clinicalnlplab/HoC_test.jsonl"),
            new { id = "h1", query = "HOC-1 Which hallmarks?", answer = "x", choices = hallmarks, gold = new[] { 0, 2 } },
            new { id = "h2", query = "HOC-2 Which hallmarks?", answer = "y", choices = hallmarks, gold = new[] { 1 } });
        WriteJsonl(Path.Combine(data, "eval/clinicalnlplab/PubMed_Summ_test.jsonl"),
            new { id = "s1", query = "SUM-1 Summarize.", answer = "testing one two" });
        WriteJsonl(Path.Combine(data, "eval/clinicalnlplab/EmrQA_test.jsonl"),
            new { id = "q1", query = "QA-1 Where?", answer = "left ventricle" },
            new { id = "q2", query = "QA-2 What drug?", answer = "metformin 500 mg" });

        var generator = new FakeGenerator(Answer);
        var options = new EvalSessionOptions
        {
            Tasks = ["i2b2", "hoc", "pubmedsum", "emrqa"], OutDir = dir["out"], DataRoot = data,
            Settings = new EvalSettings { Mode = EvalMode.LogLikelihood, BootstrapResamples = 50 },
        };
        var report = EvalSession.Run(options, new EvalModel(new ModelInfo("fake", "fake", null, null), null, generator, null), Logger.None);

        Assert.All(report.Tasks, t => Assert.Equal("generate", t.Mode));   // no choices to score: generation
        // NER: tp 2 (aspirin/treatment, ct scan/test), predicted 4, gold 3 -> F1 4/7.
        // Per type: treatment 1; problem 0; test: P 1/2, R 1 -> 2/3. Macro = 5/9.
        Assert.Equal(4.0 / 7, Metric(report, "i2b2", "entity_f1"), 12);
        Assert.Equal(5.0 / 9, Metric(report, "i2b2", "entity_macro_f1"), 12);
        // HoC: per label: proliferative (tp 1, pred 1, gold 1) 1; suppressors (tp 1, pred 2, gold 1) 2/3; angiogenesis 0.
        Assert.Equal(5.0 / 9, Metric(report, "hoc", "macro_f1"), 12);
        Assert.Equal(2.0 / 3, Metric(report, "hoc", "micro_f1"), 12);
        // ROUGE of "testing two" against "testing one two": R-1 F 0.8, R-2 F 0, R-L F 0.8.
        Assert.Equal(0.8, Metric(report, "pubmedsum", "rouge1"), 12);
        Assert.Equal(0, Metric(report, "pubmedsum", "rouge2"), 12);
        Assert.Equal(0.8, Metric(report, "pubmedsum", "rougeL"), 12);
        Assert.Contains("bertscore", report.Tasks.Single(t => t.Task == "pubmedsum").NotImplemented.Keys);
        // emrQA: first line "The left ventricle." matches exactly; "metformin" vs "metformin 500 mg": EM 0, F1 2·1·(1/3)/(4/3) = 1/2.
        Assert.Equal(0.5, Metric(report, "emrqa", "exact_match"), 12);
        Assert.Equal(0.75, Metric(report, "emrqa", "token_f1"), 12);
        Assert.Equal(7, generator.Prompts);
        Assert.All(generator.Seen, r => Assert.StartsWith("Human: \n", r.Prompt));

        // Credentialed tasks in the run: outputs are owner-only.
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(options.OutDir));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(options.OutDir, EvalSession.CacheFile)));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(options.OutDir, ResultsWriter.JsonFile)));
        }
        string md = File.ReadAllText(Path.Combine(options.OutDir, ResultsWriter.MarkdownFile));
        Assert.Contains("| i2b2 | generate 0-shot | 2 | entity_macro_f1 | 0.556", md);
        Assert.DoesNotContain("aspirin", File.ReadAllText(Path.Combine(options.OutDir, ResultsWriter.JsonFile)), StringComparison.OrdinalIgnoreCase);
    }
}

using MeLlama.Evaluation.Datasets;
using MeLlama.Evaluation.Harness;
using MeLlama.Evaluation.Tasks;
using MeLlama.TestSupport;
using Serilog.Core;

namespace MeLlama.Evaluation.Tests.Harness;

/// <summary>
/// Fixed-answer "models" through the whole runner (prompt → model → parsing → metrics) on real slices of
/// PubMedQA and MedMCQA; expected values are worked out by hand in the comments.
/// </summary>
public class FixedAnswerModelTests
{
    static TaskData PubMedQaSlice(int n)
    {
        var task = new TaskCatalog().Get("pubmedqa");
        var data = TaskDataLoader.Load(task, Path.Combine(SharedData.Root!, "data"));
        return data with { Items = data.Items.Take(n).ToList() };
    }

    static double Metric(TaskResult r, string name) => r.Metrics.Single(m => m.Name == name).Value;

    [SkippableFact]
    public void Generation_with_answer_parsing_on_a_pubmedqa_slice()
    {
        SharedData.Require(SharedData.PubMedQa);
        var data = PubMedQaSlice(8);
        // Gold labels of the first 8 test items in data order (checked, not assumed).
        Assert.Equal(["yes", "no", "yes", "no", "maybe", "no", "yes", "yes"], data.Items.Select(i => i.Gold));
        string[] answers = ["Yes.", "yes", "no", "No, it does not.", "I cannot tell.", "no", "yes", "maybe"];
        var byQuestion = data.Items.Select((item, i) => (item.Fields["question"], answers[i])).ToList();
        var generator = new FakeGenerator(prompt => byQuestion.Single(q => prompt.Contains(q.Item1, StringComparison.Ordinal)).Item2);
        using var dir = new TempDir();
        using var cache = new PredictionCache(dir["p.jsonl"], restricted: false);
        var result = new EvalRunner(null, generator, Logger.None).Run(new TaskCatalog().Get("pubmedqa"), data,
            new EvalSettings { Mode = EvalMode.Generate, BatchSize = 3, BootstrapResamples = 100 }, cache);

        // Predictions: yes, yes, no, no, (none), no, yes, maybe vs gold y n y n m n y y -> correct at 0, 3, 5, 6.
        Assert.Equal(0.5, Metric(result, "accuracy"), 12);
        // yes: tp 2 (0, 6), predicted 3 (0, 1, 6), gold 4 -> F1 4/7; no: tp 2, predicted 3, gold 3 -> F1 2/3;
        // maybe: predicted once (7), wrongly -> F1 0. Macro = (4/7 + 2/3 + 0) / 3 = 26/63.
        Assert.Equal(26.0 / 63, Metric(result, "macro_f1"), 12);
        Assert.Equal(1, result.Unparsed);
        Assert.Equal("generate", result.Mode);
        Assert.Equal(3, generator.Calls);   // 8 items in batches of 3
        Assert.All(generator.Seen, r => Assert.StartsWith("Human: \n", r.Prompt));
        Assert.All(generator.Seen, r => Assert.EndsWith("\n\nAssistant: \n", r.Prompt));
        var ci = result.Metrics.Single(m => m.Name == "accuracy");
        Assert.True(ci.Lower <= ci.Value && ci.Value <= ci.Upper);
    }

    [SkippableFact]
    public void Log_likelihood_raw_and_length_normalised_choices_on_a_pubmedqa_slice()
    {
        SharedData.Require(SharedData.PubMedQa);
        var data = PubMedQaSlice(8);
        // Log-likelihood -1 for " no", -2 for the others: raw picks "no" everywhere; per character
        // no = -1/2, yes = -2/3, maybe = -2/5 -> normalised picks "maybe" everywhere.
        var scorer = new FakeScorer((_, continuation) => continuation == " no" ? -1 : -2);
        using var dir = new TempDir();
        using var cache = new PredictionCache(dir["p.jsonl"], restricted: false);
        var result = new EvalRunner(scorer, null, Logger.None).Run(new TaskCatalog().Get("pubmedqa"), data,
            new EvalSettings { Mode = EvalMode.LogLikelihood, BootstrapResamples = 0 }, cache);

        Assert.Equal(24, scorer.Requests);   // 8 items × 3 choices
        // Gold y n y n m n y y. Always "no": 3/8 correct; no: P 3/8, R 1 -> F1 6/11; yes, maybe never predicted -> 0.
        Assert.Equal(3.0 / 8, Metric(result, "accuracy"), 12);
        Assert.Equal(6.0 / 11 / 3, Metric(result, "macro_f1"), 12);
        // Always "maybe": 1/8 correct; maybe: P 1/8, R 1 -> F1 2/9; macro 2/27.
        Assert.Equal(1.0 / 8, Metric(result, "accuracy_norm"), 12);
        Assert.Equal(2.0 / 9 / 3, Metric(result, "macro_f1_norm"), 12);
        Assert.Null(result.Metrics[0].Lower);   // no bootstrap asked for
    }

    [SkippableFact]
    public void Constant_letter_answer_on_a_medmcqa_slice()
    {
        SharedData.Require(SharedData.Mcqa);
        var task = new TaskCatalog().Get("medmcqa");
        var data = TaskDataLoader.Load(task, Path.Combine(SharedData.Root!, "data"));
        data = data with { Items = data.Items.Take(8).ToList() };
        Assert.Equal(["C", "A", "B", "B", "B", "B", "A", "A"], data.Items.Select(i => i.Gold));
        var generator = new FakeGenerator(_ => " B. This is the best option.");
        using var dir = new TempDir();
        using var cache = new PredictionCache(dir["p.jsonl"], restricted: false);
        var result = new EvalRunner(null, generator, Logger.None).Run(task, data,
            new EvalSettings { Mode = EvalMode.Generate, Limit = 8, BootstrapResamples = 50 }, cache);
        // Always B: 4/8 correct. Classes present: A, B, C (D occurs nowhere). B: P 4/8, R 1 -> 2/3;
        // A and C are never predicted -> 0. Macro = (2/3) / 3 = 2/9.
        Assert.Equal(0.5, Metric(result, "accuracy"), 12);
        Assert.Equal(2.0 / 9, Metric(result, "macro_f1"), 12);
        Assert.Equal(0, result.Unparsed);
    }
}

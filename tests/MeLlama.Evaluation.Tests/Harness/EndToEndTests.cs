using System.Text.Json;
using MeLlama.Evaluation.Datasets;
using MeLlama.Evaluation.Harness;
using MeLlama.Evaluation.Prompting;
using MeLlama.Evaluation.Tasks;
using MeLlama.Evaluation.Models;
using MeLlama.Evaluation.Reporting;
using MeLlama.Evaluation.Tests.Models;
using MeLlama.TestSupport;
using Serilog.Core;

namespace MeLlama.Evaluation.Tests.Harness;

/// <summary>The whole session (data → tiny LLaMA → metrics → results files) on the shared fixtures, kept small with a limit.</summary>
public class EndToEndTests(TinyLlamaFixture fixture) : IClassFixture<TinyLlamaFixture>
{
    EvalModel TinyModel()
    {
        var lm = new LlamaCausalLanguageModel(fixture.Model, "tiny-llama-fixture");
        return new EvalModel(new ModelInfo(SharedData.Require(SharedData.TinyLlama), lm.Fingerprint, fixture.Model.Config.ParameterCount(), fixture.Tokenizer.Name),
            new TokenizedLogLikelihoodScorer(fixture.Tokenizer, lm), new GreedyTextGenerator(fixture.Tokenizer, lm), lm);
    }

    [SkippableFact]
    public void Loglik_eval_on_pubmedqa_medqa_medmcqa_writes_results_and_resumes()
    {
        SharedData.Require(SharedData.PubMedQa);
        SharedData.Require(SharedData.Mcqa);
        using var dir = new TempDir();
        var options = new EvalSessionOptions
        {
            Tasks = ["pubmedqa", "medqa", "medmcqa"],
            OutDir = dir["out"],
            DataRoot = Path.Combine(SharedData.Root!, "data"),
            Settings = new EvalSettings { Mode = EvalMode.LogLikelihood, Limit = 6, BatchSize = 4, BootstrapResamples = 100 },
        };
        var report = EvalSession.Run(options, TinyModel(), Logger.None);
        Assert.Equal(["pubmedqa", "medqa", "medmcqa"], report.Tasks.Select(t => t.Task));
        foreach (var task in report.Tasks)
        {
            Assert.Equal(6, task.Items);
            Assert.Equal(6, task.Computed);
            Assert.Equal(["accuracy", "macro_f1", "accuracy_norm", "macro_f1_norm"], task.Metrics.Select(m => m.Name));
            Assert.All(task.Metrics, m => Assert.InRange(m.Value, 0, 1));
        }
        Assert.Equal(18, File.ReadAllLines(Path.Combine(options.OutDir, EvalSession.CacheFile)).Length);

        // The scores the harness used are the model branch's: recompute the first cached item's three choices
        // with Scoring.NextTokenLogProbs on BOS + prompt + " yes"/" no"/" maybe", summed over the choice's tokens.
        var first = JsonDocument.Parse(File.ReadLines(Path.Combine(options.OutDir, EvalSession.CacheFile)).First()).RootElement;
        var pubmedqa = new TaskCatalog().Get("pubmedqa");
        var item = TaskDataLoader.Load(pubmedqa, options.DataRoot).Items.Single(i => i.Id == first.GetProperty("item").GetString());
        string prompt = PromptTemplate.Fill(pubmedqa.Prompt, item.Fields);
        var cached = first.GetProperty("loglik").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        Assert.Equal(3, cached.Length);
        string[] choices = [" yes", " no", " maybe"];
        for (int c = 0; c < 3; c++)
        {
            int[] context = fixture.Tokenizer.Encode(prompt, addBos: true);
            int[] whole = fixture.Tokenizer.Encode(prompt + choices[c], addBos: true);
            var lp = MeLlama.Model.Scoring.NextTokenLogProbs(fixture.Model, whole);
            Assert.Equal(lp.Skip(context.Length - 1).Sum(v => (double)v), cached[c], 1e-3);
        }

        using (var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(options.OutDir, ResultsWriter.JsonFile))))
            Assert.Equal(3, json.RootElement.GetProperty("tasks").GetArrayLength());
        string md = File.ReadAllText(Path.Combine(options.OutDir, ResultsWriter.MarkdownFile));
        Assert.Contains("| pubmedqa | loglik 0-shot | 6 | accuracy |", md);
        Assert.Contains("Paper Me-LLaMA-13B", md);   // a 4M-parameter model shows all four Me-LLaMA columns
        Assert.Contains("0.700", md);                  // the paper's Me-LLaMA-13B-chat PubMedQA accuracy, from paper_results.json

        // Same command again: everything comes from the cache, same numbers.
        var again = EvalSession.Run(options, TinyModel(), Logger.None);
        Assert.All(again.Tasks, t => Assert.Equal(0, t.Computed));
        Assert.Equal(report.Tasks.SelectMany(t => t.Metrics), again.Tasks.SelectMany(t => t.Metrics));
    }

    [SkippableFact]
    public void Generate_mode_with_shots_runs_end_to_end()
    {
        SharedData.Require(SharedData.PubMedQa);
        using var dir = new TempDir();
        var options = new EvalSessionOptions
        {
            Tasks = ["pubmedqa"],
            OutDir = dir["out"],
            DataRoot = Path.Combine(SharedData.Root!, "data"),
            Settings = new EvalSettings { Mode = EvalMode.Generate, Shots = 1, Limit = 2, BootstrapResamples = 0 },
        };
        var report = EvalSession.Run(options, TinyModel(), Logger.None);
        var task = Assert.Single(report.Tasks);
        Assert.Equal("generate", task.Mode);
        Assert.Equal("MeLlama", task.PromptFormat);
        Assert.Equal(1, task.Shots);
        Assert.Contains("PQA-L items outside the test ids", task.FewShotSource);
        Assert.Equal(["accuracy", "macro_f1"], task.Metrics.Select(m => m.Name));
        var lines = File.ReadAllLines(Path.Combine(options.OutDir, EvalSession.CacheFile));
        Assert.Equal(2, lines.Length);
        Assert.All(lines, l => Assert.True(JsonDocument.Parse(l).RootElement.TryGetProperty("output", out _)));
    }
}

using MeLlama.Evaluation.Harness;
using MeLlama.Evaluation.Reporting;
using MeLlama.Evaluation.Tasks;

namespace MeLlama.Evaluation.Tests.Harness;

public class CatalogAndPaperTests
{
    [Fact]
    public void All_twelve_me_llama_datasets_are_defined_and_parse()
    {
        var catalog = new TaskCatalog();
        Assert.Equal(["bionli", "ddi2013", "emrqa", "hoc", "i2b2", "medmcqa", "mednli", "medqa", "mimiccxr", "mtsample", "pubmedqa", "pubmedsum"], catalog.Names);
        foreach (var name in catalog.Names)
        {
            var task = catalog.Get(name);
            Assert.Equal(name, task.Name);
            Assert.False(string.IsNullOrWhiteSpace(task.Dataset.Obtain), $"{name}: says how to obtain its data");
        }
        Assert.Equal(["emrqa", "i2b2", "mednli", "mimiccxr"], catalog.Names.Where(n => catalog.Get(n).Dataset.Credentialed));
        Assert.Throws<ArgumentException>(() => catalog.Get("nosuchtask"));
    }

    [Fact]
    public void Every_paper_metric_a_task_maps_to_exists_and_rows_match_the_model_columns()
    {
        var paper = PaperResults.LoadBuiltIn();
        Assert.Equal(8, paper.Models.Count);
        foreach (var (dataset, metrics) in paper.Results)
            foreach (var (metric, values) in metrics)
                Assert.True(values.Count == paper.Models.Count, $"{dataset}.{metric} has {values.Count} values");
        var catalog = new TaskCatalog();
        foreach (var name in catalog.Names)
        {
            var task = catalog.Get(name);
            Assert.True(paper.Results.ContainsKey(task.PaperKey ?? task.Name), $"{name} has paper results");
            foreach (var (_, paperMetric) in task.PaperMetrics ?? new Dictionary<string, string>())
                Assert.True(paper.Results[task.PaperKey ?? task.Name].ContainsKey(paperMetric), $"{name}: paper metric {paperMetric}");
        }
        Assert.Equal(0.700, paper.Get("pubmedqa", "accuracy", "Me-LLaMA-13B-chat"));
        Assert.Null(paper.Get("bionli", "accuracy", "Me-LLaMA-13B-chat"));
        Assert.Equal(["Me-LLaMA-13B", "Me-LLaMA-13B-chat", "LLaMA2-13B"], paper.ColumnsFor(13_000_000_000));
        Assert.Equal(["Me-LLaMA-70B", "Me-LLaMA-70B-chat", "LLaMA2-70B"], paper.ColumnsFor(69_000_000_000));
        Assert.Equal(4, paper.ColumnsFor(4_000_000).Count);
    }

    [Fact]
    public void Markdown_states_unimplemented_bertscore_and_missing_paper_numbers()
    {
        var paper = PaperResults.LoadBuiltIn();
        var report = new EvalReport
        {
            Created = DateTimeOffset.UnixEpoch, Model = new ModelInfo("m", "fp", 13_000_000_000, "tok"), Mode = "generate", Shots = 0, Seed = 1,
            BootstrapResamples = 0, ConfidenceLevel = 0.95, PaperColumns = paper.ColumnsFor(13_000_000_000),
            Tasks =
            [
                new TaskResult
                {
                    Task = "pubmedsum", Mode = "generate", Shots = 0, PromptFormat = "MeLlama", Items = 2, Computed = 2, FromCache = 0, Unparsed = 0, RunFingerprint = "r",
                    Metrics = [new MetricValue("rougeL", 0.25, null, null)],
                    NotImplemented = TaskMetrics.NotImplemented(new TaskCatalog().Get("pubmedsum")),
                    PaperMetrics = new Dictionary<string, string> { ["rougeL"] = "rouge_l" }, PaperKey = "pubmedsum",
                },
                new TaskResult
                {
                    Task = "bionli", Mode = "generate", Shots = 0, PromptFormat = "MeLlama", Items = 2, Computed = 2, FromCache = 0, Unparsed = 1, RunFingerprint = "r",
                    Metrics = [new MetricValue("accuracy", 0.5, null, null)],
                    PaperMetrics = new Dictionary<string, string> { ["accuracy"] = "accuracy" }, PaperKey = "bionli",
                },
            ],
        };
        string md = ResultsWriter.Markdown(report, paper);
        Assert.Contains("| pubmedsum | generate 0-shot | 2 | rougeL | 0.250 | 0.168 | 0.116 | 0.170 |", md);
        Assert.Contains("| pubmedsum | generate 0-shot | 2 | bertscore | not implemented | 0.654 | 0.445 | 0.654 |", md);
        Assert.Contains("BERTScore needs a BERT model", md);
        Assert.Contains("| bionli | generate 0-shot | 2 | accuracy | 0.500 | not found | not found | not found |", md);
        Assert.Contains("1 of 2 outputs named no valid answer", md);
    }
}

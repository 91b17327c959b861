using System.Text.Json;
using MeLlama.Evaluation.Datasets;
using MeLlama.Evaluation.Tasks;
using MeLlama.TestSupport;

namespace MeLlama.Evaluation.Tests.Datasets;

public class DatasetReaderTests
{
    static string DataRoot => Path.Combine(SharedData.Root!, "data");

    [SkippableFact]
    public void PubMedQa_test_split_is_the_ground_truth_ids_in_data_order_and_pool_is_the_rest()
    {
        string path = SharedData.Require(SharedData.PubMedQa);
        string ids = Path.Combine(Path.GetDirectoryName(path)!, "test_ground_truth.json");
        var data = PubMedQaReader.Read(path, ids);
        using var truth = JsonDocument.Parse(File.ReadAllText(ids));
        var expected = truth.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString());
        Assert.Equal(expected.Count, data.Items.Count);
        foreach (var item in data.Items) Assert.Equal(expected[item.Id], item.Gold);   // final_decision agrees with the test labels
        // ori_pqal.json order: the ground-truth file is sorted by label, data order mixes them early on.
        using var all = JsonDocument.Parse(File.ReadAllText(path));
        Assert.Equal(all.RootElement.EnumerateObject().Select(p => p.Name).Where(expected.ContainsKey), data.Items.Select(i => i.Id));
        Assert.Equal(3, data.Items.Take(10).Select(i => i.Gold).Distinct().Count());
        Assert.Equal(["yes", "no", "maybe"], data.Items[0].ChoiceLabels);
        Assert.Equal(1000, data.Items.Count + data.FewShotPool.Count);
        Assert.Empty(data.FewShotPool.Select(p => p.Id).Intersect(data.Items.Select(i => i.Id)));
        Assert.All(data.Items, i => Assert.False(string.IsNullOrWhiteSpace(i.Fields["contexts"])));
    }

    [SkippableFact]
    public void Mcqa_files_read_with_options_in_label_order_and_gold_among_them()
    {
        string dir = SharedData.Require(SharedData.Mcqa);
        var medqa = McqaReader.Read(Path.Combine(dir, "medqa_usmle_4opt_test.jsonl"));
        var medmcqa = McqaReader.Read(Path.Combine(dir, "medmcqa_test.jsonl"));
        Assert.Equal(1273, medqa.Count);
        Assert.Equal(2816, medmcqa.Count);
        foreach (var item in medqa.Concat(medmcqa))
        {
            Assert.Equal(["A", "B", "C", "D"], item.ChoiceLabels);
            Assert.Contains(item.Gold, item.ChoiceLabels);
        }
        // medqa's "answer" field holds the gold option's text: check GoldText against it on the first line.
        using var first = JsonDocument.Parse(File.ReadLines(Path.Combine(dir, "medqa_usmle_4opt_test.jsonl")).First());
        Assert.Equal(first.RootElement.GetProperty("answer").GetString(), medqa[0].GoldText);
        Assert.StartsWith("A. ", medqa[0].Fields["options"]);
        Assert.Equal(medqa.Count, medqa.Select(i => i.Id).Distinct().Count());
    }

    [Fact]
    public void Malformed_mcqa_line_is_reported_with_file_line_and_field()
    {
        using var dir = new TempDir();
        string path = dir["bad.jsonl"];
        File.WriteAllLines(path,
        [
            """{"question": "q1", "options": {"A": "x", "B": "y"}, "answer_idx": "A"}""",
            "",
            """{"question": "q2", "options": {"A": "x", "B": "y"}, "answer_idx": "C"}""",
        ]);
        var e = Assert.Throws<DatasetException>(() => McqaReader.Read(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("line 3", e.Message);
        Assert.Contains("answer_idx", e.Message);

        File.WriteAllLines(path, ["""{"question": "q1", "answer_idx": "A"}"""]);
        e = Assert.Throws<DatasetException>(() => McqaReader.Read(path));
        Assert.Contains("line 1", e.Message);
        Assert.Contains("'options'", e.Message);

        File.WriteAllLines(path, ["""{"question": "q1", """]);
        e = Assert.Throws<DatasetException>(() => McqaReader.Read(path));
        Assert.Contains("not valid JSON", e.Message);
    }

    [Fact]
    public void Instruction_layout_reads_choice_multilabel_and_text_tasks()
    {
        using var dir = new TempDir();
        string single = dir["single.jsonl"];
        File.WriteAllLines(single,
        [
            """{"id": "a1", "query": "Q1 Answer:", "answer": "neutral", "choices": ["entailment", "neutral", "contradiction"], "gold": 1}""",
            """{"id": "a2", "query": "Q2 Answer:", "answer": "entailment", "choices": ["entailment", "neutral", "contradiction"], "gold": 0}""",
        ]);
        var items = InstructionReader.Read(single, AnswerKind.Choice);
        Assert.Equal(["a1", "a2"], items.Select(i => i.Id));
        Assert.Equal(["neutral", "entailment"], items.Select(i => i.Gold));
        Assert.Equal("Q1 Answer:", items[0].Fields["query"]);

        string multi = dir["multi.json"];
        File.WriteAllText(multi, """[{"query": "Q", "answer": "x, z", "choices": ["x", "y", "z"], "gold": [0, 2]}]""");
        var ml = InstructionReader.Read(multi, AnswerKind.MultiLabel);
        Assert.Equal("x; z", ml[0].Gold);
        Assert.Equal("0", ml[0].Id);
        // Two golds are not a single-label item.
        var e = Assert.Throws<DatasetException>(() => InstructionReader.Read(multi, AnswerKind.Choice));
        Assert.Contains("record 0", e.Message);
        Assert.Contains("'gold'", e.Message);

        string text = dir["text.jsonl"];
        File.WriteAllLines(text, ["""{"query": "Summarize: ...", "answer": "A summary."}"""]);
        Assert.Equal("A summary.", InstructionReader.Read(text, AnswerKind.Summary)[0].Gold);
        e = Assert.Throws<DatasetException>(() => InstructionReader.Read(text, AnswerKind.Choice));
        Assert.Contains("'choices'", e.Message);
    }

    [Fact]
    public void Missing_credentialed_dataset_names_file_fields_and_access()
    {
        var task = new TaskCatalog().Get("mednli");
        using var dir = new TempDir();
        var e = Assert.Throws<DatasetException>(() => TaskDataLoader.Load(task, dir.Path));
        Assert.Contains(Path.Combine(dir.Path, "eval", "clinicalnlplab", "MedNLI_test.jsonl"), e.Message);
        Assert.Contains("query", e.Message);
        Assert.Contains("gold", e.Message);
        Assert.Contains("data-use agreement", e.Message);
        Assert.Contains("PhysioNet", e.Message);
    }
}

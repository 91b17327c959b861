using System.Text.Json;
using MeLlama.Evaluation.Tasks;

namespace MeLlama.Evaluation.Datasets;

/// <summary>
/// MedQA / MedMCQA as JSON lines (the medagents-benchmark layout): <c>question</c>, <c>options</c>
/// (object label → text, labels A..E), <c>answer_idx</c> (a label). Item id: <c>realidx</c> or <c>id</c>
/// when present, else the line number. Fields for prompts: question, options (formatted "A. text" lines).
/// </summary>
public static class McqaReader
{
    public const string Expected = "JSON lines with fields question (string), options (object label → text) and answer_idx (one of the option labels)";

    public static List<EvalItem> Read(string path)
    {
        var items = new List<EvalItem>();
        var seen = new HashSet<string>();
        foreach (var (where, record) in JsonRecords.Read(path))
        {
            var f = new JsonFields(record, path, where);
            string question = f.RequiredString("question");
            var options = f.Required("options", JsonValueKind.Object, "an object mapping option labels (A, B, ...) to texts");
            var labels = new List<string>();
            var texts = new List<string>();
            foreach (var option in options.EnumerateObject().OrderBy(o => o.Name, StringComparer.Ordinal))
            {
                if (option.Value.ValueKind != JsonValueKind.String)
                    throw DatasetException.Field(path, where, $"options.{option.Name}", "must be a string");
                labels.Add(option.Name);
                texts.Add(option.Value.GetString()!);
            }
            if (labels.Count < 2) throw DatasetException.Field(path, where, "options", "must hold at least two options");
            string gold = f.RequiredString("answer_idx");
            if (!labels.Contains(gold))
                throw DatasetException.Field(path, where, "answer_idx", $"must be one of the option labels ({string.Join(", ", labels)})");
            string id = f.OptionalString("realidx") ?? f.OptionalString("id") ?? where.Replace("line ", "", StringComparison.Ordinal);
            if (!seen.Add(id)) throw DatasetException.Field(path, where, "realidx", $"duplicates id {id}");
            var fields = new Dictionary<string, string>
            {
                ["id"] = id,
                ["question"] = question,
                ["options"] = PromptOptions.Format(labels, texts),
            };
            items.Add(new EvalItem(id, fields, texts, labels, gold));
        }
        return items;
    }
}

/// <summary>Formats answer options the way prompts show them: one "A. text" line per option.</summary>
public static class PromptOptions
{
    public static string Format(IReadOnlyList<string> labels, IReadOnlyList<string> texts) =>
        string.Join("\n", labels.Select((l, i) => $"{l}. {texts[i]}"));
}

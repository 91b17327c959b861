using System.Text.Json;
using MeLlama.Evaluation.Tasks;

namespace MeLlama.Evaluation.Datasets;

/// <summary>
/// The layout of the Me-LLaMA benchmark test sets (<c>clinicalnlplab/*_test</c>, exported as JSON lines
/// or a JSON array): <c>query</c> (the full instruction + input), <c>answer</c> (reference text), and for
/// choice tasks <c>choices</c> (label names) and <c>gold</c> (index into choices; an array of indices for
/// multi-label tasks). Optional <c>id</c>; else the record number. Fields for prompts: every string field of
/// the record (query, answer, text, ...).
/// </summary>
public static class InstructionReader
{
    public const string Expected = "JSON lines (or a JSON array) of records with query and answer, plus choices (array of strings) and gold (index or array of indices) for choice and multi-label tasks";

    public static List<EvalItem> Read(string path, AnswerKind kind)
    {
        var items = new List<EvalItem>();
        var seen = new HashSet<string>();
        int index = 0;
        foreach (var (where, record) in JsonRecords.Read(path))
        {
            var f = new JsonFields(record, path, where);
            f.RequiredString("query");
            string answer = f.RequiredString("answer");
            string id = f.OptionalString("id") ?? index.ToString(System.Globalization.CultureInfo.InvariantCulture);
            index++;
            if (!seen.Add(id)) throw DatasetException.Field(path, where, "id", $"duplicates id {id}");
            var fields = new Dictionary<string, string>();
            foreach (var p in record.EnumerateObject())
                if (p.Value.ValueKind == JsonValueKind.String) fields[p.Name] = p.Value.GetString()!;
            fields["id"] = id;

            IReadOnlyList<string> choices = [];
            string gold = answer;
            if (kind is AnswerKind.Choice or AnswerKind.MultiLabel)
            {
                var array = f.Required("choices", JsonValueKind.Array, "an array of label names");
                choices = array.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()!
                    : throw DatasetException.Field(path, where, "choices", "must be an array of strings")).ToList();
                if (!f.Has("gold")) throw DatasetException.Field(path, where, "gold", "is missing (expected the index of the correct choice)");
                var goldElement = record.GetProperty("gold");
                var indices = goldElement.ValueKind switch
                {
                    JsonValueKind.Number => [goldElement.GetInt32()],
                    JsonValueKind.Array => goldElement.EnumerateArray().Select(e => e.GetInt32()).ToList(),
                    _ => throw DatasetException.Field(path, where, "gold", "must be an index into choices or an array of indices"),
                };
                foreach (int i in indices)
                    if (i < 0 || i >= choices.Count) throw DatasetException.Field(path, where, "gold", $"index {i} is outside choices (0..{choices.Count - 1})");
                if (kind == AnswerKind.Choice && indices.Count != 1)
                    throw DatasetException.Field(path, where, "gold", "must be a single index for a single-label task");
                gold = string.Join("; ", indices.Select(i => choices[i]));
                fields["options"] = string.Join(", ", choices);
            }
            items.Add(new EvalItem(id, fields, choices, choices, gold));
        }
        return items;
    }
}

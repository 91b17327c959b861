using System.Text.Json;
using MeLlama.Evaluation.Tasks;

namespace MeLlama.Evaluation.Datasets;

/// <summary>
/// PubMedQA PQA-L: <c>ori_pqal.json</c> is an object PMID → {QUESTION, CONTEXTS (array of strings),
/// LONG_ANSWER, final_decision ∈ yes/no/maybe}; the test split is the set of PMIDs in
/// <c>test_ground_truth.json</c> (an object PMID → label, or an array of PMIDs). Items keep ori_pqal.json's
/// order, not the id file's: that file is sorted by label, so its first N items (--limit) would all be "yes".
/// Fields for prompts: question, contexts (paragraphs joined by newlines), long_answer.
/// </summary>
public static class PubMedQaReader
{
    public const string Expected = "PubMedQA's ori_pqal.json: a JSON object PMID → {QUESTION, CONTEXTS, LONG_ANSWER, final_decision}";
    static readonly string[] Labels = ["yes", "no", "maybe"];

    public static TaskData Read(string dataPath, string? testIdsPath)
    {
        var all = ReadAll(dataPath);
        if (testIdsPath == null) return new TaskData(all, [], "none (no test-id file given)");
        var testIds = ReadIds(testIdsPath);
        var known = all.Select(i => i.Id).ToHashSet();
        foreach (var id in testIds)
            if (!known.Contains(id)) throw new DatasetException($"{testIdsPath}: test id {id} is not a key of {dataPath}");
        var testSet = testIds.ToHashSet();
        var items = all.Where(i => testSet.Contains(i.Id)).ToList();
        var pool = all.Where(i => !testSet.Contains(i.Id)).ToList();
        return new TaskData(items, pool, $"PQA-L items outside the test ids ({pool.Count})");
    }

    public static List<EvalItem> ReadAll(string path)
    {
        using var doc = ParseFile(path);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new DatasetException($"{path}: expected {Expected}, found a JSON {doc.RootElement.ValueKind}");
        var items = new List<EvalItem>();
        foreach (var property in doc.RootElement.EnumerateObject())
        {
            var f = new JsonFields(property.Value, path, $"record {property.Name}");
            string decision = f.RequiredString("final_decision");
            if (!Labels.Contains(decision))
                throw DatasetException.Field(path, $"record {property.Name}", "final_decision", "must be yes, no or maybe");
            var fields = new Dictionary<string, string>
            {
                ["id"] = property.Name,
                ["question"] = f.RequiredString("QUESTION"),
                ["contexts"] = f.StringOrJoinedArray("CONTEXTS", "\n"),
                ["long_answer"] = f.OptionalString("LONG_ANSWER") ?? "",
            };
            items.Add(new EvalItem(property.Name, fields, Labels, Labels, decision));
        }
        return items;
    }

    static List<string> ReadIds(string path)
    {
        using var doc = ParseFile(path);
        return doc.RootElement.ValueKind switch
        {
            JsonValueKind.Object => doc.RootElement.EnumerateObject().Select(p => p.Name).ToList(),
            JsonValueKind.Array => doc.RootElement.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : e.GetRawText()).ToList(),
            _ => throw new DatasetException($"{path}: expected a JSON object whose keys are test PMIDs, or an array of PMIDs"),
        };
    }

    static JsonDocument ParseFile(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            return JsonDocument.Parse(stream);
        }
        catch (JsonException e) { throw new DatasetException($"{path}: not valid JSON ({e.Message})", e); }
    }
}

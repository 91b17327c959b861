using System.Text.Json.Nodes;
using MeLlama.Inference.ChatTemplates;

namespace MeLlama.Training.Finetune.Data;

/// <summary>
/// PubMedQA records (ori_pqal.json: {pmid: {QUESTION, CONTEXTS, LONG_ANSWER, final_decision}}) as instructions:
/// the abstract's context paragraphs and the question in, "{yes|no|maybe}. {long answer}" out.
/// </summary>
public static class PubMedQaInstructions
{
    public static bool LooksLikePubMedQa(JsonNode? record) => record is JsonObject o && o.ContainsKey("QUESTION") && o.ContainsKey("LONG_ANSWER");

    public static string Prompt(string question, IEnumerable<string> contexts) =>
        $"Context: {string.Join(" ", contexts)}\nQuestion: {question}\nAnswer yes, no or maybe, and explain.";

    public static string Answer(string decision, string longAnswer) => $"{decision}. {longAnswer}";

    /// <summary>The conversation for one record; null with a (text-free) problem when a field is missing.</summary>
    public static IReadOnlyList<ChatMessage>? Convert(JsonObject record, out string? problem)
    {
        problem = null;
        string? question = Str(record, "QUESTION"), longAnswer = Str(record, "LONG_ANSWER"), decision = Str(record, "final_decision");
        var contexts = record["CONTEXTS"] as JsonArray;
        if (question is null) problem = "field \"QUESTION\" is missing or not a string";
        else if (longAnswer is null) problem = "field \"LONG_ANSWER\" is missing or not a string";
        else if (decision is null) problem = "field \"final_decision\" is missing or not a string";
        else if (contexts is null || contexts.Any(c => c is not JsonValue v || !v.TryGetValue<string>(out _))) problem = "field \"CONTEXTS\" must be a list of strings";
        if (problem is not null) return null;
        return [ChatMessage.User(Prompt(question!, contexts!.Select(c => c!.GetValue<string>()))), ChatMessage.Assistant(Answer(decision!, longAnswer!))];
    }

    static string? Str(JsonObject record, string field) =>
        record[field] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
}

using MeLlama.Evaluation.Tasks;

namespace MeLlama.Evaluation.Prompting;

/// <summary>
/// Turns an item into model input: k examples (prompt + answer), then the item's prompt, all wrapped in
/// the chosen format; for log-likelihood mode also the per-choice continuations.
/// Placeholders: the item's fields, plus {gold}/{gold_text} in Target and {label}/{choice} in Continuation.
/// </summary>
public sealed class PromptBuilder(TaskDefinition task, PromptFormat format, int shots, FewShotSampler sampler)
{
    public const string ShotSeparator = "\n\n";

    public string Context(EvalItem item)
    {
        var parts = new List<string>();
        foreach (var shot in sampler.Sample(item, shots))
            parts.Add(ItemPrompt(shot) + PromptTemplate.Fill(task.Target, WithGold(shot), $"{task.Name}.target"));
        parts.Add(ItemPrompt(item));
        return PromptFormats.Wrap(format, string.Join(ShotSeparator, parts));
    }

    /// <summary>One continuation per choice, aligned with <see cref="EvalItem.ChoiceLabels"/>.</summary>
    public IReadOnlyList<string> Continuations(EvalItem item, string context)
    {
        var result = new List<string>(item.Choices.Count);
        for (int i = 0; i < item.Choices.Count; i++)
        {
            var fields = new Dictionary<string, string>(item.Fields) { ["label"] = item.ChoiceLabels[i], ["choice"] = item.Choices[i] };
            string continuation = PromptTemplate.Fill(task.Continuation, fields, $"{task.Name}.continuation");
            // After a chat wrapper that ends in a newline, a leading space would be an odd token.
            if (context.EndsWith('\n')) continuation = continuation.TrimStart(' ');
            result.Add(continuation);
        }
        return result;
    }

    string ItemPrompt(EvalItem item) => PromptTemplate.Fill(task.Prompt, item.Fields, $"{task.Name}.prompt");

    static Dictionary<string, string> WithGold(EvalItem item) =>
        new(item.Fields) { ["gold"] = item.Gold, ["gold_text"] = item.GoldText };
}

namespace MeLlama.Evaluation.Tasks;

/// <summary>
/// One evaluation example. <see cref="Fields"/> feed the prompt template (e.g. question, contexts,
/// query). Choice tasks carry parallel <see cref="Choices"/> (text) and <see cref="ChoiceLabels"/>
/// (what is predicted and scored: "A".."E", or "yes"/"no"/"maybe"); <see cref="Gold"/> is then a label.
/// Other tasks carry the reference answer text in <see cref="Gold"/> (for multi-label tasks: labels joined by "; ").
/// </summary>
public sealed record EvalItem(
    string Id,
    IReadOnlyDictionary<string, string> Fields,
    IReadOnlyList<string> Choices,
    IReadOnlyList<string> ChoiceLabels,
    string Gold)
{
    /// <summary>Text of the gold choice (choice tasks), else <see cref="Gold"/>.</summary>
    public string GoldText
    {
        get
        {
            for (int i = 0; i < ChoiceLabels.Count; i++)
                if (ChoiceLabels[i] == Gold) return Choices[i];
            return Gold;
        }
    }
}

/// <summary>A task's evaluation items and the pool its few-shot examples are drawn from.</summary>
public sealed record TaskData(IReadOnlyList<EvalItem> Items, IReadOnlyList<EvalItem> FewShotPool, string FewShotSource);

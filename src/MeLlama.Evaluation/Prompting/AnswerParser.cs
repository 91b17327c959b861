using System.Text.RegularExpressions;
using MeLlama.Evaluation.Metrics;
using MeLlama.Evaluation.Tasks;

namespace MeLlama.Evaluation.Prompting;

/// <summary>Turns generated text (or a reference answer) into the structure a task's metric compares.</summary>
public static partial class AnswerParser
{
    /// <summary>
    /// The chosen label, or null when the output names none. For letter labels (A..E): an explicit
    /// "answer is X" / "Answer: X", else a leading "X." / "(X)", else exactly one option text quoted,
    /// else the first standalone capital letter that is a label (not the article "A"). For word labels
    /// (yes/no/maybe, class names): the earliest whole-word mention, longer labels winning ties.
    /// </summary>
    public static string? Choice(string output, IReadOnlyList<string> labels, IReadOnlyList<string> choiceTexts)
    {
        string text = output.Trim();
        if (text.Length == 0) return null;
        bool letters = labels.All(l => l.Length == 1 && char.IsAsciiLetterUpper(l[0]));
        if (letters)
        {
            foreach (var regex in new[] { ExplicitAnswer(), LeadingLetter() })
            {
                var m = regex.Match(text);
                if (m.Success && labels.Contains(m.Groups["l"].Value)) return m.Groups["l"].Value;
            }
            var quoted = choiceTexts.Select((t, i) => (t, i))
                .Where(x => x.t.Length > 0 && text.Contains(x.t, StringComparison.OrdinalIgnoreCase)).ToList();
            if (quoted.Count == 1) return labels[quoted[0].i];
            foreach (Match m in StandaloneLetter().Matches(text))
            {
                string l = m.Groups["l"].Value;
                bool article = l == "A" && m.Index + 2 < text.Length && text[m.Index + 1] == ' ' && char.IsLower(text[m.Index + 2]);
                if (!article && labels.Contains(l)) return l;
            }
            return null;
        }
        string? best = null;
        int bestAt = int.MaxValue;
        foreach (var label in labels)
        {
            var m = Regex.Match(text, $@"(?<![\p{{L}}\p{{N}}]){Regex.Escape(label)}(?![\p{{L}}\p{{N}}])", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant);
            if (m.Success && (m.Index < bestAt || (m.Index == bestAt && label.Length > best!.Length))) { best = label; bestAt = m.Index; }
        }
        return best;
    }

    /// <summary>Every label mentioned (whole phrase, case-insensitive).</summary>
    public static IReadOnlySet<string> Labels(string output, IReadOnlyList<string> labels) =>
        labels.Where(l => Regex.IsMatch(output, $@"(?<![\p{{L}}\p{{N}}]){Regex.Escape(l)}(?![\p{{L}}\p{{N}}])", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant))
            .ToHashSet(StringComparer.Ordinal);

    /// <summary>Entity mentions, one per line matching <paramref name="linePattern"/> (named groups span, type).
    /// Span text is lower-cased with whitespace collapsed; type is lower-cased.</summary>
    public static IReadOnlySet<EntityMention> Entities(string output, string linePattern)
    {
        var regex = new Regex(linePattern, RegexOptions.CultureInvariant);
        var set = new HashSet<EntityMention>();
        foreach (var line in Lines(output))
        {
            var m = regex.Match(line);
            if (m.Success) set.Add(new EntityMention(Normalize(m.Groups["span"].Value), Normalize(m.Groups["type"].Value)));
        }
        return set;
    }

    /// <summary>Relation triples, one per line matching <paramref name="linePattern"/> (named groups head, tail, type).</summary>
    public static IReadOnlySet<RelationMention> Relations(string output, string linePattern)
    {
        var regex = new Regex(linePattern, RegexOptions.CultureInvariant);
        var set = new HashSet<RelationMention>();
        foreach (var line in Lines(output))
        {
            var m = regex.Match(line);
            if (m.Success) set.Add(new RelationMention(Normalize(m.Groups["head"].Value), Normalize(m.Groups["tail"].Value), Normalize(m.Groups["type"].Value)));
        }
        return set;
    }

    /// <summary>The first non-empty line (extractive answers).</summary>
    public static string FirstLine(string output) => Lines(output).FirstOrDefault() ?? "";

    static IEnumerable<string> Lines(string text) =>
        text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0);

    static string Normalize(string s) => string.Join(' ', s.Trim().ToLowerInvariant().Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));

    [GeneratedRegex(@"(?i:answer)(?:\s+(?i:is))?\s*[:\-]?\s*(?:(?i:option)\s+)?\(?(?<l>[A-Z])(?![A-Za-z])")]
    private static partial Regex ExplicitAnswer();

    [GeneratedRegex(@"^[\s\*""']*\(?(?<l>[A-Z])(?:[\)\.:,]|$|\s+(?![a-z]))")]
    private static partial Regex LeadingLetter();

    [GeneratedRegex(@"(?<![A-Za-z])(?<l>[A-Z])(?![A-Za-z])")]
    private static partial Regex StandaloneLetter();
}

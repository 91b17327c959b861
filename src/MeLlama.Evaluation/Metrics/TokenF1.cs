using System.Text;

namespace MeLlama.Evaluation.Metrics;

/// <summary>
/// SQuAD-style answer metrics for extractive QA (emrQA): answers are normalised (lower-case, punctuation
/// and the articles a/an/the removed, whitespace collapsed); exact match is string equality, token F1
/// is the bag-of-tokens overlap F1.
/// </summary>
public static class TokenF1
{
    public static string Normalize(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (char ch in text.ToLowerInvariant())
            sb.Append(char.IsPunctuation(ch) || char.IsSymbol(ch) ? ' ' : ch);
        var words = sb.ToString().Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)
            .Where(w => w is not ("a" or "an" or "the"));
        return string.Join(' ', words);
    }

    public static bool ExactMatch(string gold, string predicted) => Normalize(gold) == Normalize(predicted);

    public static double F1(string gold, string predicted)
    {
        var g = Normalize(gold).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var p = Normalize(predicted).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (g.Length == 0 || p.Length == 0) return g.Length == p.Length ? 1 : 0;
        var goldCounts = g.GroupBy(t => t).ToDictionary(x => x.Key, x => x.Count());
        int common = 0;
        foreach (var t in p)
            if (goldCounts.TryGetValue(t, out int c) && c > 0) { common++; goldCounts[t] = c - 1; }
        return PrecisionRecallF1.FromCounts(common, p.Length, g.Length).F1;
    }
}

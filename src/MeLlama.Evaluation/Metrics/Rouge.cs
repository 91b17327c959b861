using System.Text;

namespace MeLlama.Evaluation.Metrics;

/// <summary>ROUGE-1, ROUGE-2 and ROUGE-L (sentence-level LCS) of one prediction against one reference.</summary>
public sealed record RougeScores(PrecisionRecallF1 Rouge1, PrecisionRecallF1 Rouge2, PrecisionRecallF1 RougeL);

/// <summary>
/// ROUGE as computed by Google's rouge-score package (the usual reference in LLM papers): lower-case,
/// every run of non-[a-z0-9] characters becomes a space, split on whitespace, optionally Porter-stem
/// tokens longer than 3 characters; n-gram overlap is clipped by counts; ROUGE-L is the LCS over the
/// whole text (not the newline-split "Lsum"). Precision is relative to the prediction, recall to the reference.
/// </summary>
public sealed class RougeScorer(bool useStemmer = false)
{
    public bool UseStemmer { get; } = useStemmer;

    public IReadOnlyList<string> Tokenize(string text)
    {
        var normalized = new StringBuilder(text.Length);
        foreach (char ch in text.ToLowerInvariant())
            normalized.Append(ch is >= 'a' and <= 'z' or >= '0' and <= '9' ? ch : ' ');
        var tokens = new List<string>();
        foreach (var raw in normalized.ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries))
            tokens.Add(UseStemmer && raw.Length > 3 ? PorterStemmer.Stem(raw) : raw);
        return tokens;
    }

    public RougeScores Score(string reference, string prediction)
    {
        var refTokens = Tokenize(reference);
        var predTokens = Tokenize(prediction);
        return new RougeScores(NGramOverlap(refTokens, predTokens, 1), NGramOverlap(refTokens, predTokens, 2), Lcs(refTokens, predTokens));
    }

    static PrecisionRecallF1 NGramOverlap(IReadOnlyList<string> reference, IReadOnlyList<string> prediction, int n)
    {
        var refCounts = CountNGrams(reference, n);
        var predCounts = CountNGrams(prediction, n);
        long overlap = 0;
        foreach (var (gram, count) in predCounts)
            if (refCounts.TryGetValue(gram, out int refCount)) overlap += Math.Min(count, refCount);
        return PrecisionRecallF1.FromCounts(overlap, Math.Max(0, prediction.Count - n + 1), Math.Max(0, reference.Count - n + 1));
    }

    static Dictionary<string, int> CountNGrams(IReadOnlyList<string> tokens, int n)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i + n <= tokens.Count; i++)
        {
            // Tokens are [a-z0-9]+, so a space cannot occur inside one and joining is unambiguous.
            string gram = n == 1 ? tokens[i] : string.Join(' ', tokens.Skip(i).Take(n));
            counts[gram] = counts.GetValueOrDefault(gram) + 1;
        }
        return counts;
    }

    static PrecisionRecallF1 Lcs(IReadOnlyList<string> reference, IReadOnlyList<string> prediction)
    {
        if (reference.Count == 0 || prediction.Count == 0) return default;
        // Two rolling rows of the classic DP table: O(|ref|·|pred|) time, O(|pred|) memory.
        var previous = new int[prediction.Count + 1];
        var current = new int[prediction.Count + 1];
        for (int i = 1; i <= reference.Count; i++)
        {
            for (int j = 1; j <= prediction.Count; j++)
                current[j] = string.Equals(reference[i - 1], prediction[j - 1], StringComparison.Ordinal)
                    ? previous[j - 1] + 1
                    : Math.Max(previous[j], current[j - 1]);
            (previous, current) = (current, previous);
        }
        int lcs = previous[prediction.Count];
        return PrecisionRecallF1.FromCounts(lcs, prediction.Count, reference.Count);
    }
}

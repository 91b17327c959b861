namespace MeLlama.Evaluation.Metrics;

/// <summary>Macro-F1 with its per-class parts (for the results file).</summary>
public sealed record MacroF1Result(double MacroF1, IReadOnlyDictionary<string, PrecisionRecallF1> PerClass);

/// <summary>
/// Single-label classification metrics. A prediction of null means "could not be parsed": it is wrong
/// for accuracy and counts as a false negative of the gold class (and a false positive of no class).
/// </summary>
public static class Classification
{
    public static double Accuracy(IReadOnlyList<string> gold, IReadOnlyList<string?> predicted)
    {
        CheckLengths(gold, predicted);
        if (gold.Count == 0) return 0;
        int correct = 0;
        for (int i = 0; i < gold.Count; i++)
            if (predicted[i] != null && string.Equals(gold[i], predicted[i], StringComparison.Ordinal)) correct++;
        return (double)correct / gold.Count;
    }

    /// <summary>
    /// Unweighted mean of per-class F1 over <paramref name="labels"/>; a class that is never predicted
    /// contributes F1 = 0 (sklearn's f1_score(average="macro", labels=labels, zero_division=0)).
    /// Predictions outside the label set (and unparsed ones) only lower the recall of their item's gold class.
    /// Use <see cref="PresentLabels"/> for sklearn's default label set.
    /// </summary>
    public static MacroF1Result MacroF1(IReadOnlyList<string> gold, IReadOnlyList<string?> predicted, IReadOnlyList<string> labels)
    {
        CheckLengths(gold, predicted);
        if (labels.Count == 0) throw new ArgumentException("Macro-F1 needs at least one label", nameof(labels));
        var perClass = new Dictionary<string, PrecisionRecallF1>(StringComparer.Ordinal);
        double sum = 0;
        foreach (var label in labels)
        {
            long tp = 0, predictedCount = 0, goldCount = 0;
            for (int i = 0; i < gold.Count; i++)
            {
                bool isGold = string.Equals(gold[i], label, StringComparison.Ordinal);
                bool isPredicted = string.Equals(predicted[i], label, StringComparison.Ordinal);
                if (isGold) goldCount++;
                if (isPredicted) predictedCount++;
                if (isGold && isPredicted) tp++;
            }
            var prf = PrecisionRecallF1.FromCounts(tp, predictedCount, goldCount);
            perClass[label] = prf;
            sum += prf.F1;
        }
        return new MacroF1Result(sum / labels.Count, perClass);
    }

    /// <summary>
    /// The classes of <paramref name="labelSet"/> that occur in gold or predictions, in label-set order: the
    /// labels sklearn averages over by default, minus anything that is not a class (unparsed outputs). On a
    /// small slice this keeps a class that occurs nowhere from counting as F1 = 0.
    /// </summary>
    public static IReadOnlyList<string> PresentLabels(IReadOnlyList<string> gold, IReadOnlyList<string?> predicted, IReadOnlyList<string> labelSet)
    {
        var present = new HashSet<string>(gold, StringComparer.Ordinal);
        foreach (var p in predicted) if (p != null) present.Add(p);
        return labelSet.Where(present.Contains).ToList();
    }

    static void CheckLengths(IReadOnlyList<string> gold, IReadOnlyList<string?> predicted)
    {
        if (gold.Count != predicted.Count)
            throw new ArgumentException($"{gold.Count} gold labels but {predicted.Count} predictions");
    }
}

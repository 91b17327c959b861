namespace MeLlama.Evaluation.Metrics;

/// <summary>A named-entity mention: exact span (character offsets, or the normalised surface text when a
/// dataset carries no offsets) plus type. Equal only when span and type both match.</summary>
public sealed record EntityMention(string Span, string Type);

/// <summary>A typed relation between two argument spans (order matters: head → tail).</summary>
public sealed record RelationMention(string Head, string Tail, string Type);

/// <summary>
/// Micro-averaged precision/recall/F1 over per-item sets of structured predictions (entities, relations):
/// true positives are exact matches within the same item, summed over all items before dividing.
/// </summary>
public static class SetF1
{
    public static PrecisionRecallF1 Micro<T>(IReadOnlyList<IReadOnlySet<T>> gold, IReadOnlyList<IReadOnlySet<T>> predicted)
    {
        if (gold.Count != predicted.Count)
            throw new ArgumentException($"{gold.Count} gold items but {predicted.Count} predicted items");
        long tp = 0, predictedCount = 0, goldCount = 0;
        for (int i = 0; i < gold.Count; i++)
        {
            goldCount += gold[i].Count;
            predictedCount += predicted[i].Count;
            foreach (var p in predicted[i]) if (gold[i].Contains(p)) tp++;
        }
        return PrecisionRecallF1.FromCounts(tp, predictedCount, goldCount);
    }

    /// <summary>Mean over types of the per-type micro F1 (types from gold ∪ predictions).</summary>
    public static double MacroOverTypes(IReadOnlyList<IReadOnlySet<EntityMention>> gold, IReadOnlyList<IReadOnlySet<EntityMention>> predicted)
    {
        var types = gold.SelectMany(s => s).Concat(predicted.SelectMany(s => s)).Select(e => e.Type).Distinct().ToList();
        if (types.Count == 0) return 0;
        double sum = 0;
        foreach (var type in types)
        {
            var g = gold.Select(s => (IReadOnlySet<EntityMention>)s.Where(e => e.Type == type).ToHashSet()).ToList();
            var p = predicted.Select(s => (IReadOnlySet<EntityMention>)s.Where(e => e.Type == type).ToHashSet()).ToList();
            sum += Micro(g, p).F1;
        }
        return sum / types.Count;
    }
}

namespace MeLlama.Evaluation.Metrics;

/// <summary>Precision, recall and their harmonic mean; 0 where a denominator is 0 (sklearn's zero_division=0).</summary>
public readonly record struct PrecisionRecallF1(double Precision, double Recall, double F1)
{
    public static PrecisionRecallF1 FromCounts(long truePositives, long predicted, long gold)
    {
        double p = predicted == 0 ? 0 : (double)truePositives / predicted;
        double r = gold == 0 ? 0 : (double)truePositives / gold;
        return new(p, r, FMeasure(p, r));
    }

    public static double FMeasure(double precision, double recall) =>
        precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0;
}

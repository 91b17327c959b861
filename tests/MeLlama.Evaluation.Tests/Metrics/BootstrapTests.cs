using MeLlama.Evaluation.Metrics;

namespace MeLlama.Evaluation.Tests.Metrics;

public class BootstrapTests
{
    static Func<int[], double> MeanOf(bool[] correct) => idx => idx.Length == 0 ? 0 : idx.Count(i => correct[i]) / (double)idx.Length;

    [Fact]
    public void Interval_contains_point_estimate_and_is_deterministic_by_seed()
    {
        var correct = Enumerable.Range(0, 400).Select(i => (i * 7919 % 10) < 6).ToArray(); // 60% correct
        var a = Bootstrap.Percentile(correct.Length, MeanOf(correct), seed: 42);
        var b = Bootstrap.Percentile(correct.Length, MeanOf(correct), seed: 42);
        var c = Bootstrap.Percentile(correct.Length, MeanOf(correct), seed: 43);
        Assert.Equal(0.6, a.Value, 12);
        Assert.True(a.Lower <= a.Value && a.Value <= a.Upper, $"{a.Lower} <= {a.Value} <= {a.Upper}");
        Assert.Equal(a, b);
        Assert.True(a.Value == c.Value && a.Lower >= 0 && c.Upper <= 1);
        Assert.Equal(1000, a.Resamples);
        // Normal approximation: half-width ~ 1.96 * sqrt(0.6*0.4/400) = 0.048
        double halfWidth = (a.Upper - a.Lower) / 2;
        Assert.InRange(halfWidth, 0.038, 0.058);
    }

    [Fact]
    public void Different_seeds_draw_different_resamples()
    {
        // A continuous metric, so that different resamples give different quantiles.
        var x = Enumerable.Range(0, 50).Select(i => Math.Sin(i * 12.9898) * 43758.5453 % 1).ToArray();
        double Mean(int[] idx) => idx.Average(i => x[i]);
        var a = Bootstrap.Percentile(x.Length, Mean, resamples: 300, seed: 1);
        var b = Bootstrap.Percentile(x.Length, Mean, resamples: 300, seed: 2);
        Assert.Equal(a.Value, b.Value, 12);
        Assert.NotEqual(a.Lower, b.Lower);
        Assert.Equal(a, Bootstrap.Percentile(x.Length, Mean, resamples: 300, seed: 1));
    }

    [Fact]
    public void Works_for_corpus_level_metrics_such_as_macro_f1()
    {
        string[] gold = ["yes", "no", "maybe", "yes", "no", "yes", "no", "yes"];
        string?[] pred = ["yes", "no", "yes", "yes", "yes", "no", "no", "yes"];
        string[] labels = ["yes", "no", "maybe"];
        double Metric(int[] idx) => Classification.MacroF1(idx.Select(i => gold[i]).ToList(), idx.Select(i => pred[i]).ToList(), labels).MacroF1;
        var ci = Bootstrap.Percentile(gold.Length, Metric, resamples: 200, seed: 7);
        Assert.Equal(Classification.MacroF1(gold, pred, labels).MacroF1, ci.Value, 12);
        Assert.True(ci.Lower <= ci.Value && ci.Value <= ci.Upper);
    }

    [Fact]
    public void SplitMix64_matches_the_reference_sequence()
    {
        // First outputs of SplitMix64 seeded with 1234567 (reference C implementation by Vigna).
        var rng = new SplitMix64(1234567);
        Assert.Equal(6457827717110365317UL, rng.Next());
        Assert.Equal(3203168211198807973UL, rng.Next());
    }
}

namespace MeLlama.Evaluation.Metrics;

/// <summary>A point estimate with a two-sided percentile-bootstrap confidence interval.</summary>
public sealed record ConfidenceInterval(double Value, double Lower, double Upper, double Level, int Resamples);

/// <summary>
/// Percentile bootstrap over evaluation items: resample item indices with replacement, recompute the
/// (possibly corpus-level, e.g. macro-F1) metric on each resample, take the (1±level)/2 quantiles.
/// Deterministic for a seed: the generator is our own SplitMix64, not System.Random, so the draws do not
/// depend on the .NET version.
/// </summary>
public static class Bootstrap
{
    public const int DefaultResamples = 1000;

    /// <param name="count">Number of items.</param>
    /// <param name="metric">Metric of the multiset of items given by the index array (indices may repeat).</param>
    public static ConfidenceInterval Percentile(int count, Func<int[], double> metric, int resamples = DefaultResamples, ulong seed = 1234, double level = 0.95)
    {
        if (level is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(level));
        var all = Enumerable.Range(0, count).ToArray();
        double point = metric(all);
        if (count == 0 || resamples <= 0) return new ConfidenceInterval(point, point, point, level, 0);

        var rng = new SplitMix64(seed);
        var values = new double[resamples];
        var indices = new int[count];
        for (int r = 0; r < resamples; r++)
        {
            for (int i = 0; i < count; i++) indices[i] = (int)rng.NextBelow((ulong)count);
            values[r] = metric(indices);
        }
        Array.Sort(values);
        double alpha = (1 - level) / 2;
        return new ConfidenceInterval(point, Quantile(values, alpha), Quantile(values, 1 - alpha), level, resamples);
    }

    /// <summary>Linear interpolation between order statistics (numpy's default "linear" method).</summary>
    static double Quantile(double[] sorted, double q)
    {
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos);
        int hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
    }
}

/// <summary>SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, fully specified, so seeds reproduce anywhere.</summary>
public sealed class SplitMix64(ulong seed)
{
    ulong _state = seed;

    public ulong Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, bound) without modulo bias (rejection sampling).</summary>
    public ulong NextBelow(ulong bound)
    {
        if (bound == 0) throw new ArgumentOutOfRangeException(nameof(bound));
        ulong threshold = (0 - bound) % bound;
        while (true)
        {
            ulong r = Next();
            if (r >= threshold) return r % bound;
        }
    }
}

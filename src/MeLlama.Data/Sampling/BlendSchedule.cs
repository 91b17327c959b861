namespace MeLlama.Data.Sampling;

/// <summary>
/// Megatron's blending rule: each next sample goes to the domain furthest behind its target share
/// (largest weight × samples-so-far − drawn), ties to the first domain. The realised counts never differ
/// from weight × total by more than one sample, whatever the total. Pure function of the counts, so the
/// schedule needs no seed and no stored history.
/// </summary>
public sealed class BlendSchedule
{
    readonly double[] _weights;
    readonly long[] _counts;

    public BlendSchedule(IReadOnlyList<double> weights, IReadOnlyList<long>? counts = null)
    {
        if (weights.Count == 0) throw new ArgumentException("at least one domain is needed", nameof(weights));
        if (weights.Any(w => !(w >= 0) || double.IsInfinity(w))) throw new ArgumentException("weights must be finite and ≥ 0", nameof(weights));
        double sum = weights.Sum();
        if (!(sum > 0)) throw new ArgumentException("weights must not all be zero", nameof(weights));
        _weights = [.. weights.Select(w => w / sum)];
        _counts = counts is null ? new long[weights.Count] : [.. counts];
        if (_counts.Length != _weights.Length) throw new ArgumentException("one count per domain", nameof(counts));
        Total = _counts.Sum();
    }

    public IReadOnlyList<double> Weights => _weights;
    public IReadOnlyList<long> Counts => _counts;
    public long Total { get; private set; }

    /// <summary>Picks the domain of the next sample and returns (domain, its index within the domain).</summary>
    public (int Domain, long IndexInDomain) Next()
    {
        int best = -1;
        double bestShortfall = double.NegativeInfinity;
        double target = Total + 1;
        for (int d = 0; d < _weights.Length; d++)
        {
            if (_weights[d] == 0) continue;
            double shortfall = _weights[d] * target - _counts[d];
            if (shortfall > bestShortfall) { bestShortfall = shortfall; best = d; }
        }
        Total++;
        return (best, _counts[best]++);
    }
}

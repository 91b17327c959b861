namespace MeLlama.Inference.Generation;

/// <summary>
/// Picks the next token from a row of logits: repetition penalty, then greedy argmax or temperature / top-k / top-p
/// sampling. Runs on the CPU over a float array (one vocabulary row per step is cheap to copy) with its own seeded
/// random stream, so a seed gives the same tokens on every device.
/// </summary>
public sealed class TokenSampler
{
    readonly GenerationOptions _options;
    readonly Random _random;
    int[] _order = [];
    double[] _probs = [];

    public TokenSampler(GenerationOptions options)
    {
        _options = options.Validate();
        _random = new Random(unchecked((int)(options.Seed ^ (options.Seed >> 32))));
    }

    /// <summary>
    /// Chooses a token from <paramref name="logits"/> (modified in place by the repetition penalty), given the tokens
    /// already in the sequence (<paramref name="seen"/>, for the penalty).
    /// </summary>
    public int Next(float[] logits, IReadOnlySet<int> seen)
    {
        double penalty = _options.RepetitionPenalty;
        if (penalty != 1.0)
        {
            // CTRL/HF rule: make seen tokens less likely whatever the sign of their logit.
            foreach (int id in seen)
            {
                if ((uint)id >= (uint)logits.Length) continue;
                float l = logits[id];
                logits[id] = (float)(l < 0 ? l * penalty : l / penalty);
            }
        }
        if (_options.Greedy) return ArgMax(logits);
        return Sample(logits);
    }

    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        float bestValue = float.NegativeInfinity;
        for (int i = 0; i < logits.Length; i++)
        {
            // Strictly greater: ties go to the lowest id, as torch.argmax does.
            if (logits[i] > bestValue) { bestValue = logits[i]; best = i; }
        }
        return best;
    }

    int Sample(float[] logits)
    {
        int vocab = logits.Length;
        if (_order.Length != vocab) { _order = new int[vocab]; _probs = new double[vocab]; }
        for (int i = 0; i < vocab; i++) _order[i] = i;
        // Candidates in decreasing logit order (ties by id), cut to top-k.
        int k = _options.TopK > 0 ? Math.Min(_options.TopK, vocab) : vocab;
        Array.Sort(_order, (a, b) => logits[b].CompareTo(logits[a]) is var c && c != 0 ? c : a.CompareTo(b));
        double temperature = _options.Temperature, max = logits[_order[0]] / temperature, sum = 0;
        for (int i = 0; i < k; i++)
        {
            double p = Math.Exp(logits[_order[i]] / temperature - max);
            _probs[i] = p;
            sum += p;
        }
        // Nucleus: keep the shortest prefix whose probability mass reaches top_p (at least one token).
        int keep = k;
        if (_options.TopP < 1.0)
        {
            double cumulative = 0;
            for (int i = 0; i < k; i++)
            {
                cumulative += _probs[i] / sum;
                if (cumulative >= _options.TopP) { keep = i + 1; break; }
            }
            sum = 0;
            for (int i = 0; i < keep; i++) sum += _probs[i];
        }
        double u = _random.NextDouble() * sum;
        for (int i = 0; i < keep; i++)
        {
            u -= _probs[i];
            if (u <= 0) return _order[i];
        }
        return _order[keep - 1];
    }
}

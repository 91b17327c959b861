using MeLlama.Evaluation.Metrics;
using MeLlama.Evaluation.Models;

namespace MeLlama.Evaluation.Perplexity;

/// <summary>Perplexity of one domain: exp(mean negative log-likelihood per scored token), with a bootstrap interval over windows.</summary>
public sealed record DomainPerplexity(string Domain, long Windows, long Tokens, double MeanNll, double Perplexity, double? PerplexityLower, double? PerplexityUpper);

/// <summary>
/// Scores held-out windows with the model and reports per-domain perplexity. Windows are read in stored
/// order (the first <c>maxWindows</c> when capped); each window's tokens after the first are scored given
/// everything before them in the window.
/// </summary>
public static class PerplexityEvaluator
{
    public static DomainPerplexity Evaluate(ICausalLanguageModel model, ITokenWindowSource source, long? maxWindows = null, int batchSize = 4,
        int bootstrapResamples = Bootstrap.DefaultResamples, ulong seed = 1234)
    {
        if (source.WindowLength < 2) throw new ArgumentException("Windows need at least two tokens");
        if (source.WindowLength > model.MaxSequenceLength)
            throw new ArgumentException($"Windows of {source.WindowLength} tokens exceed the model's {model.MaxSequenceLength} positions; use a shorter --ppl-seq-len");
        long count = Math.Min(source.Count, maxWindows ?? long.MaxValue);
        var windowNll = new double[count];   // summed NLL per window (all windows score the same number of tokens)
        var buffer = new long[source.WindowLength];
        for (long start = 0; start < count; start += batchSize)
        {
            var spans = new List<ScoringSpan>();
            for (long w = start; w < Math.Min(count, start + batchSize); w++)
            {
                source.Read(w, buffer);
                spans.Add(new ScoringSpan(buffer.Select(t => checked((int)t)).ToArray(), 1));
            }
            var logProbs = model.TokenLogProbs(spans);
            for (int i = 0; i < spans.Count; i++) windowNll[start + i] = -logProbs[i].Sum(v => (double)v);
        }
        int perWindow = source.WindowLength - 1;
        if (count == 0) return new DomainPerplexity(source.Domain, 0, 0, double.NaN, double.NaN, null, null);
        double Mean(int[] idx) => idx.Sum(i => windowNll[i]) / (idx.Length * (double)perWindow);
        var ci = Bootstrap.Percentile(checked((int)count), Mean, bootstrapResamples, seed);
        return new DomainPerplexity(source.Domain, count, count * perWindow, ci.Value, Math.Exp(ci.Value),
            ci.Resamples > 0 ? Math.Exp(ci.Lower) : null, ci.Resamples > 0 ? Math.Exp(ci.Upper) : null);
    }
}

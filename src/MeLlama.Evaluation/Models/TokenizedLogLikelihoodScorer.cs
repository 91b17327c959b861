using MeLlama.Tokenization;

namespace MeLlama.Evaluation.Models;

/// <summary>
/// <see cref="ILogLikelihoodScorer"/> over a tokenizer and a token-level model. As in lm-evaluation-harness,
/// the continuation's tokens are those of encode(context + continuation) beyond encode(context), so a
/// word piece that merges across the boundary is scored in context (SentencePiece would tokenize the
/// continuation differently on its own). When the joint encoding does not extend the context encoding,
/// the two are encoded separately and concatenated. Sequences start with BOS; a sequence longer than the
/// model's window loses context tokens from the left, after BOS (never continuation tokens).
/// </summary>
public sealed class TokenizedLogLikelihoodScorer(ITextTokenizer tokenizer, ICausalLanguageModel model, int batchSize = 8) : ILogLikelihoodScorer
{
    public string Fingerprint => $"{model.Fingerprint}+tok:{tokenizer.Fingerprint}";

    public IReadOnlyList<LogLikelihood> Score(IReadOnlyList<LogLikelihoodRequest> requests)
    {
        var encoded = requests.Select(Encode).ToList();
        var results = new LogLikelihood[requests.Count];
        // Longest first: batches of similar length waste less padding.
        var order = Enumerable.Range(0, requests.Count).OrderByDescending(i => encoded[i].Tokens.Length).ToList();
        for (int start = 0; start < order.Count; start += batchSize)
        {
            var batch = order.Skip(start).Take(batchSize).ToList();
            var logProbs = model.TokenLogProbs(batch.Select(i => new ScoringSpan(encoded[i].Tokens, encoded[i].ContinuationStart)).ToList());
            for (int b = 0; b < batch.Count; b++)
            {
                double sum = 0;
                foreach (float lp in logProbs[b]) sum += lp;
                results[batch[b]] = new LogLikelihood(sum, logProbs[b].Length);
            }
        }
        return results;
    }

    /// <summary>BOS + context + continuation tokens, and where the continuation starts.</summary>
    public (int[] Tokens, int ContinuationStart) Encode(LogLikelihoodRequest request)
    {
        int[] context = tokenizer.Encode(request.Context, addBos: true);
        int[] whole = tokenizer.Encode(request.Context + request.Continuation, addBos: true);
        int[] tokens;
        int start;
        if (whole.Length > context.Length && whole.AsSpan(0, context.Length).SequenceEqual(context))
        {
            tokens = whole;
            start = context.Length;
        }
        else
        {
            int[] continuation = tokenizer.Encode(request.Continuation);
            tokens = [.. context, .. continuation];
            start = context.Length;
        }
        if (start == tokens.Length) throw new ArgumentException("The continuation encodes to no tokens");
        int max = model.MaxSequenceLength;
        if (tokens.Length > max)
        {
            int continuationLength = tokens.Length - start;
            if (continuationLength >= max) throw new ArgumentException($"Continuation of {continuationLength} tokens does not fit the model's {max}-token window");
            // Keep BOS (the model has always seen it first) and the last max-1 tokens.
            int drop = tokens.Length - max;
            tokens = [tokens[0], .. tokens[(drop + 1)..]];
            start -= drop;
        }
        return (tokens, start);
    }
}

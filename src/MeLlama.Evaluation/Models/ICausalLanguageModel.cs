namespace MeLlama.Evaluation.Models;

/// <summary>Score <c>Tokens[FirstTarget..]</c>, each given everything before it (FirstTarget ≥ 1).</summary>
public sealed record ScoringSpan(int[] Tokens, int FirstTarget)
{
    public int TargetCount => Tokens.Length - FirstTarget;
}

/// <summary>
/// Token-level view of a causal LM, the seam between the harness and a concrete model (the TorchSharp
/// LLaMA in <see cref="LlamaCausalLanguageModel"/>, or a fake in tests).
/// </summary>
public interface ICausalLanguageModel
{
    /// <summary>Identifies the weights (for caches); changes when they change.</summary>
    string Fingerprint { get; }

    /// <summary>Longest sequence a forward pass accepts.</summary>
    int MaxSequenceLength { get; }

    /// <summary>
    /// Per span: entry j = log p(Tokens[FirstTarget + j] | Tokens[0 .. FirstTarget + j − 1]); with
    /// FirstTarget = 1 that is the model branch's Scoring.NextTokenLogProbs. Asking only for the targets
    /// lets an implementation skip the vocabulary projection everywhere else.
    /// </summary>
    IReadOnlyList<float[]> TokenLogProbs(IReadOnlyList<ScoringSpan> spans);

    /// <summary>Per prefix: the most likely next token.</summary>
    IReadOnlyList<int> GreedyNextTokens(IReadOnlyList<int[]> prefixes);
}

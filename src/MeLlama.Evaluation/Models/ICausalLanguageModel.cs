namespace MeLlama.Evaluation.Models;

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

    /// <summary>Per sequence: entry i = log p(tokens[i+1] | tokens[0..i]) (length = tokens.Length - 1).</summary>
    IReadOnlyList<float[]> NextTokenLogProbs(IReadOnlyList<int[]> sequences);

    /// <summary>Per prefix: the most likely next token.</summary>
    IReadOnlyList<int> GreedyNextTokens(IReadOnlyList<int[]> prefixes);
}

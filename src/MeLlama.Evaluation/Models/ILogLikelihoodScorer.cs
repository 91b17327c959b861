namespace MeLlama.Evaluation.Models;

/// <summary>Score log p(continuation | context) for this pair.</summary>
public sealed record LogLikelihoodRequest(string Context, string Continuation);

/// <summary>Sum of the continuation tokens' log-probabilities and how many tokens that was.</summary>
public readonly record struct LogLikelihood(double Sum, int TokenCount);

/// <summary>
/// What log-likelihood (multiple-choice) evaluation needs from a model. Implementations batch internally;
/// results align with requests. <see cref="Fingerprint"/> identifies the model (weights + tokenizer) for
/// the prediction cache.
/// </summary>
public interface ILogLikelihoodScorer
{
    string Fingerprint { get; }
    IReadOnlyList<LogLikelihood> Score(IReadOnlyList<LogLikelihoodRequest> requests);
}

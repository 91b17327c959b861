using System.Text.Json.Serialization;

namespace MeLlama.Evaluation.Harness;

/// <summary>
/// One answered item, as appended to the JSONL prediction cache. Choice tasks store the parsed label
/// (<see cref="Prediction"/>; null = unparsable) and, in log-likelihood mode, the per-choice scores and the
/// length-normalised choice; other tasks store the raw <see cref="Output"/> and are parsed at scoring time.
/// </summary>
public sealed record PredictionRecord
{
    public required string Key { get; init; }
    public required string Task { get; init; }
    public required string Item { get; init; }
    /// <summary>Fingerprint of everything the answer depends on (model, tokenizer, task definition, mode, shots, seed, format).</summary>
    public required string Run { get; init; }
    public required string Mode { get; init; }
    public required string Gold { get; init; }
    public string? Prediction { get; init; }
    [JsonPropertyName("prediction_norm")] public string? PredictionNorm { get; init; }
    [JsonPropertyName("loglik")] public double[]? LogLikelihoods { get; init; }
    [JsonPropertyName("continuation_chars")] public int[]? ContinuationChars { get; init; }
    [JsonPropertyName("continuation_tokens")] public int[]? ContinuationTokens { get; init; }
    public string? Output { get; init; }
}

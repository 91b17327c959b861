using System.Text.Json.Serialization;

namespace MeLlama.Training.Metrics;

/// <summary>One line of <c>metrics.jsonl</c>: a training step (kind "train") or a held-out evaluation (kind "eval").</summary>
public sealed record MetricRecord
{
    public string Kind { get; init; } = "train";
    public long Step { get; init; }
    public long Tokens { get; init; }
    public double? Loss { get; init; }
    public double? Lr { get; init; }
    public double? GradNorm { get; init; }
    public double? TokensPerSecond { get; init; }
    public double? Mfu { get; init; }
    public double? MemoryMb { get; init; }
    public long? SkippedSteps { get; init; }
    /// <summary>Held-out domain name (eval records).</summary>
    public string? Domain { get; init; }
    public double? Perplexity { get; init; }
    /// <summary>Tokens the held-out loss averages over (eval records; the sum over ranks when sharded).</summary>
    public long? EvalTokens { get; init; }
    public double ElapsedSeconds { get; init; }
    public DateTimeOffset Time { get; init; }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(MetricRecord))]
public sealed partial class MetricJson : JsonSerializerContext;

namespace MeLlama.Evaluation.Harness;

/// <summary>A metric's value with its bootstrap confidence interval (null bounds when not bootstrapped).</summary>
public sealed record MetricValue(string Name, double Value, double? Lower, double? Upper);

/// <summary>Everything the report says about one task.</summary>
public sealed record TaskResult
{
    public required string Task { get; init; }
    public string? Title { get; init; }
    public string? Family { get; init; }
    public required string Mode { get; init; }
    public required int Shots { get; init; }
    public required string PromptFormat { get; init; }
    public string? FewShotSource { get; init; }
    public required int Items { get; init; }
    public required int Computed { get; init; }
    public required int FromCache { get; init; }
    /// <summary>Items whose output named no valid answer (counted wrong).</summary>
    public required int Unparsed { get; init; }
    public required string RunFingerprint { get; init; }
    public required IReadOnlyList<MetricValue> Metrics { get; init; }
    /// <summary>Metrics the paper reports that this harness does not compute, with the reason.</summary>
    public IReadOnlyDictionary<string, string> NotImplemented { get; init; } = new Dictionary<string, string>();
    public IReadOnlyDictionary<string, string>? PaperMetrics { get; init; }
    public string? PaperKey { get; init; }
}

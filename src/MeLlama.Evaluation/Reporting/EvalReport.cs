using MeLlama.Evaluation.Harness;

namespace MeLlama.Evaluation.Reporting;

/// <summary>The model an evaluation ran on.</summary>
public sealed record ModelInfo(string Path, string Fingerprint, long? ParameterCount, string? Tokenizer);

/// <summary>Everything written to results.json.</summary>
public sealed record EvalReport
{
    public required DateTimeOffset Created { get; init; }
    public required ModelInfo Model { get; init; }
    public required string Mode { get; init; }
    public required int Shots { get; init; }
    public required ulong Seed { get; init; }
    public int? Limit { get; init; }
    public required int BootstrapResamples { get; init; }
    public required double ConfidenceLevel { get; init; }
    public required IReadOnlyList<TaskResult> Tasks { get; init; }
    public IReadOnlyList<Perplexity.DomainPerplexity> Perplexity { get; init; } = [];
    public IReadOnlyList<string> PaperColumns { get; init; } = [];
    public string? PaperSource { get; init; }
    public IReadOnlyList<string> Notes { get; init; } = [];
}

using MeLlama.Evaluation.Prompting;

namespace MeLlama.Evaluation.Harness;

public enum EvalMode
{
    /// <summary>Score every choice's continuation; pick the highest (raw sum and per-character).</summary>
    LogLikelihood,
    /// <summary>Generate greedily and parse the answer.</summary>
    Generate,
}

/// <summary>Knobs of one evaluation run. <see cref="Format"/> null = plain for log-likelihood, Me-LLaMA's wrapper for generation.</summary>
public sealed record EvalSettings
{
    public EvalMode Mode { get; init; } = EvalMode.LogLikelihood;
    public int Shots { get; init; }
    public int? Limit { get; init; }
    public ulong Seed { get; init; } = 1234;
    /// <summary>Items per model call (and per cache append).</summary>
    public int BatchSize { get; init; } = 8;
    public int BootstrapResamples { get; init; } = Metrics.Bootstrap.DefaultResamples;
    public double ConfidenceLevel { get; init; } = 0.95;
    public PromptFormat? Format { get; init; }

    public PromptFormat EffectiveFormat(EvalMode mode) => Format ?? (mode == EvalMode.Generate ? PromptFormat.MeLlama : PromptFormat.Plain);

    public static string ModeName(EvalMode mode) => mode == EvalMode.LogLikelihood ? "loglik" : "generate";
}

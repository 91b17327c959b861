namespace MeLlama.Inference.Generation;

/// <summary>How to pick tokens and when to stop.</summary>
public sealed record GenerationOptions
{
    /// <summary>Upper bound on generated tokens (fewer when the model's context fills up).</summary>
    public int MaxNewTokens { get; init; } = 256;
    /// <summary>0 = greedy (argmax); otherwise logits are divided by it before sampling.</summary>
    public double Temperature { get; init; }
    /// <summary>Sample among the K most likely tokens only; 0 = all.</summary>
    public int TopK { get; init; }
    /// <summary>Nucleus sampling: the smallest set of most likely tokens whose probability reaches P; 1 = off.</summary>
    public double TopP { get; init; } = 1.0;
    /// <summary>HF/CTRL repetition penalty on every token already in the sequence (prompt included); 1 = off.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    /// <summary>Seed of the sampler (only used when sampling).</summary>
    public ulong Seed { get; init; }
    /// <summary>Stop when the model emits its EOS token (not included in the text).</summary>
    public bool StopAtEos { get; init; } = true;
    /// <summary>Stop as soon as the text contains one of these (the text is cut before it).</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>Reuse keys/values of earlier positions (normal); false recomputes the whole sequence every step (reference/benchmark).</summary>
    public bool UseKvCache { get; init; } = true;

    public bool Greedy => Temperature <= 0;

    /// <summary>Throws <see cref="ArgumentException"/> naming the bad setting.</summary>
    public GenerationOptions Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentException($"max new tokens must be >= 0 (got {MaxNewTokens})");
        if (!(Temperature >= 0) || double.IsInfinity(Temperature)) throw new ArgumentException($"temperature must be >= 0 (got {Temperature})");
        if (TopK < 0) throw new ArgumentException($"top-k must be >= 0 (got {TopK})");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"top-p must be in (0, 1] (got {TopP})");
        if (!(RepetitionPenalty > 0) || double.IsInfinity(RepetitionPenalty)) throw new ArgumentException($"repetition penalty must be > 0 (got {RepetitionPenalty})");
        if (StopStrings.Any(string.IsNullOrEmpty)) throw new ArgumentException("stop strings must not be empty");
        return this;
    }
}

namespace MeLlama.Training.Finetune.Lora;

/// <summary>
/// Low-rank adapters (Hu et al., 2021) as PEFT defines them: each targeted projection W [out, in] gets
/// ΔW = (alpha / rank) · B · A with A [rank, in] (Kaiming-uniform) and B [out, rank] (zeros), so an untrained adapter
/// changes nothing; dropout applies to the adapter's input only.
/// </summary>
public sealed record LoraConfig
{
    /// <summary>The seven linear maps of a LLaMA decoder layer, in HF names.</summary>
    public static IReadOnlyList<string> AllProjections { get; } = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    public int Rank { get; init; } = 8;
    public double Alpha { get; init; } = 16;
    public double Dropout { get; init; } = 0.05;
    /// <summary>Which projections get adapters (subset of <see cref="AllProjections"/>).</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = AllProjections;

    /// <summary>The factor alpha / rank applied to B·A.</summary>
    public double Scaling => Alpha / Rank;

    public LoraConfig Validate()
    {
        if (Rank <= 0) throw new ArgumentException($"lora rank must be > 0 (got {Rank})");
        if (!(Alpha > 0) || double.IsInfinity(Alpha)) throw new ArgumentException($"lora alpha must be > 0 (got {Alpha})");
        if (!(Dropout >= 0 && Dropout < 1)) throw new ArgumentException($"lora dropout must be in [0, 1) (got {Dropout})");
        if (TargetModules.Count == 0) throw new ArgumentException("lora target_modules is empty");
        foreach (var target in TargetModules)
            if (!AllProjections.Contains(target))
                throw new ArgumentException($"lora target module '{target}' is not a LLaMA projection ({string.Join(", ", AllProjections)})");
        if (TargetModules.Distinct().Count() != TargetModules.Count) throw new ArgumentException("lora target_modules lists a module twice");
        return this;
    }
}

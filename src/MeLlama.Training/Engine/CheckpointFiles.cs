namespace MeLlama.Training.Engine;

/// <summary>File names inside a checkpoint folder.</summary>
public static class CheckpointFiles
{
    /// <summary>fp32 (master) weights with Hugging Face names.</summary>
    public const string Model = "model.safetensors";
    /// <summary>AdamW moments: <c>exp_avg.NAME</c>, <c>exp_avg_sq.NAME</c> (fp32).</summary>
    public const string Optimizer = "optimizer.safetensors";
    /// <summary>torch generator states.</summary>
    public const string Rng = "rng.safetensors";
    /// <summary>Step/token counters, schedule, data-sampler state, bad-step counters (<see cref="Training.TrainerState"/>).</summary>
    public const string TrainerState = "trainer_state.json";
    /// <summary>The resolved training config.</summary>
    public const string Config = "train_config.json";
    /// <summary>The model's Hugging Face config.json.</summary>
    public const string ModelConfig = "config.json";
}

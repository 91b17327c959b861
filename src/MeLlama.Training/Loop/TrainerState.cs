using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace MeLlama.Training.Loop;

/// <summary><c>trainer_state.json</c> of a checkpoint: everything besides tensors that exact resume needs.</summary>
public sealed record TrainerState
{
    /// <summary>Optimizer steps taken (applied or skipped); the next step is Step.</summary>
    public long Step { get; init; }
    /// <summary>Training tokens consumed (including those of skipped steps).</summary>
    public long Tokens { get; init; }
    /// <summary>AdamW bias-correction counter (updates actually applied).</summary>
    public long OptimizerSteps { get; init; }
    public long SkippedSteps { get; init; }
    public int ConsecutiveBadSteps { get; init; }
    public long TotalSteps { get; init; }
    public ScheduleState Schedule { get; init; } = new();
    /// <summary>Data stream position (opaque to the trainer).</summary>
    public JsonNode? Sampler { get; init; }
    public double ElapsedSeconds { get; init; }
    public int WorldSize { get; init; } = 1;
    public string Precision { get; init; } = "fp32";
    /// <summary>Why this checkpoint was written: interval, final, preempted (SIGTERM/…), time-limit, diverged.</summary>
    public string Reason { get; init; } = "interval";
}

public sealed record ScheduleState
{
    public double PeakLr { get; init; }
    public double MinLr { get; init; }
    public long WarmupSteps { get; init; }
    public long TotalSteps { get; init; }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(TrainerState))]
public sealed partial class TrainerStateJson : JsonSerializerContext;

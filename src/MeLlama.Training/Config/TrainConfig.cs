using System.Text.Json.Serialization;

namespace MeLlama.Training.Config;

/// <summary>
/// Everything a pretraining run needs, as read from a JSON recipe (snake_case keys) plus <c>--set</c> overrides.
/// The resolved copy is stored in every checkpoint so that a resumed run, an export or a plot knows exactly
/// what produced it.
/// </summary>
public sealed record TrainConfig
{
    /// <summary>Where checkpoints, metrics, logs and TensorBoard events go (relative paths: against the working directory).</summary>
    public string RunDir { get; set; } = "runs/demo";
    public ModelSection Model { get; set; } = new();
    public DataSection Data { get; set; } = new();
    /// <summary>Tokens per training sequence (each sample holds seq_len + 1 tokens: inputs and shifted labels).</summary>
    public int SeqLen { get; set; } = 256;
    /// <summary>Sequences per forward/backward pass on one device.</summary>
    public int MicroBatch { get; set; } = 4;
    /// <summary>Micro-batches accumulated per optimizer step; null = derived from <see cref="GlobalBatchTokens"/>.</summary>
    public int? GradAccum { get; set; }
    /// <summary>Tokens per optimizer step across all ranks; null = seq_len × micro_batch × grad_accum × world size.</summary>
    public long? GlobalBatchTokens { get; set; }
    public OptimizerSection Optimizer { get; set; } = new();
    public ScheduleSection Schedule { get; set; } = new();
    public ulong Seed { get; set; } = 1234;
    /// <summary>"fp32", or "bf16" (bf16 compute with fp32 master weights, gradients and optimizer state).</summary>
    public string Precision { get; set; } = "fp32";
    /// <summary>Recompute each decoder layer during backward instead of keeping its activations.</summary>
    public bool ActivationCheckpointing { get; set; }
    /// <summary>"auto" (cuda when present, else cpu), "cpu", "cuda", "cuda:N".</summary>
    public string Device { get; set; } = "auto";
    /// <summary>torch intra-op threads; 0 = all cores. Fixed per run so CPU results are reproducible.</summary>
    public int Threads { get; set; }
    public long? MaxSteps { get; set; }
    public long? MaxTokens { get; set; }
    public EvalSection Eval { get; set; } = new();
    public CheckpointSection Checkpoint { get; set; } = new();
    /// <summary>How the step is spread over ranks when the job has several (mellama launch, torchrun or srun); ignored on one rank.</summary>
    public ParallelSection Parallel { get; set; } = new();
    /// <summary>Stop after this many optimizer steps in a row had a non-finite loss or gradient.</summary>
    public int MaxBadSteps { get; set; } = 5;
    /// <summary>Write a metrics line every N steps.</summary>
    public int LogInterval { get; set; } = 1;
    public bool Tensorboard { get; set; } = true;
    /// <summary>Measure the device's matmul peak at start-up (for MFU).</summary>
    public bool MeasurePeak { get; set; } = true;
}

public sealed record ModelSection
{
    /// <summary>Hugging Face LLaMA folder to continue from (the normal case). Null = random init from <see cref="Arch"/>.</summary>
    public string? InitFrom { get; set; }
    /// <summary>Shape for random init (HF config.json field names). Ignored when <see cref="InitFrom"/> is set.</summary>
    public ArchSection? Arch { get; set; }
    /// <summary>Tokenizer spec for export: "gpt2", a tokenizer.model path or an HF folder; null = the init_from folder's.</summary>
    public string? Tokenizer { get; set; }
    /// <summary>Std of the normal init (HF's initializer_range).</summary>
    public double InitStd { get; set; } = 0.02;
}

public sealed record ArchSection
{
    public int HiddenSize { get; set; } = 128;
    public int NumHiddenLayers { get; set; } = 4;
    public int NumAttentionHeads { get; set; } = 4;
    public int? NumKeyValueHeads { get; set; }
    public int IntermediateSize { get; set; } = 344;
    /// <summary>Null = the tokenizer's vocabulary size.</summary>
    public int? VocabSize { get; set; }
    public int MaxPositionEmbeddings { get; set; } = 4096;
    public double RmsNormEps { get; set; } = 1e-5;
    public double RopeTheta { get; set; } = 10000;
    public bool TieWordEmbeddings { get; set; }
}

public sealed record DataSection
{
    /// <summary>Prepared datasets (folders written by `mellama prepare`) with mixing weights.</summary>
    public List<DomainSource> Datasets { get; set; } = [];
    /// <summary>Held-out sets evaluated per domain; empty = each training domain's held-out split where the data layer has one.</summary>
    public List<DomainSource> EvalSets { get; set; } = [];
}

public sealed record DomainSource
{
    public string Name { get; set; } = "";
    public string Path { get; set; } = "";
    public double Weight { get; set; } = 1;
}

public sealed record OptimizerSection
{
    public double Lr { get; set; } = 8e-6;
    public double Beta1 { get; set; } = 0.9;
    public double Beta2 { get; set; } = 0.95;
    public double Eps { get; set; } = 1e-8;
    public double WeightDecay { get; set; } = 1e-5;
    /// <summary>Clip the global gradient L2 norm to this; 0 = no clipping.</summary>
    public double GradClip { get; set; } = 1.0;
}

public sealed record ScheduleSection
{
    /// <summary>Fraction of the total steps spent warming up linearly from 0 to lr.</summary>
    public double WarmupRatio { get; set; } = 0.05;
    /// <summary>Floor of the cosine decay; null = lr × <see cref="MinLrRatio"/>.</summary>
    public double? MinLr { get; set; }
    public double MinLrRatio { get; set; } = 0.1;
}

public sealed record EvalSection
{
    /// <summary>Evaluate held-out loss every N steps (and at the start and end); 0 = only at the end.</summary>
    public int Interval { get; set; } = 100;
    /// <summary>Micro-batches per held-out set per evaluation.</summary>
    public int Batches { get; set; } = 8;
}

public sealed record CheckpointSection
{
    /// <summary>Save every N steps (and at the end, on preemption and on the wall-clock budget).</summary>
    public int Interval { get; set; } = 500;
    /// <summary>Keep this many newest complete checkpoints (never fewer than one good one).</summary>
    public int KeepLast { get; set; } = 3;
    /// <summary>Save when a run completes. False suits throughput benchmarks, where a 13B/70B final save costs minutes;
    /// preemption, the wall-clock budget and divergence always save.</summary>
    public bool SaveFinal { get; set; } = true;
}

public sealed record ParallelSection
{
    /// <summary>Names of <see cref="Strategy"/> values, as written in recipes.</summary>
    public static readonly IReadOnlyList<string> Strategies = ["full_shard", "shard_grad_op", "no_shard"];

    /// <summary>
    /// With more than one rank: "full_shard" (ZeRO-3: parameters, gradients and AdamW state sharded), "shard_grad_op"
    /// (ZeRO-2: gradients and optimizer state sharded, parameters kept whole) or "no_shard" (plain data parallel).
    /// </summary>
    public string Strategy { get; set; } = "full_shard";
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    ReadCommentHandling = System.Text.Json.JsonCommentHandling.Skip, AllowTrailingCommas = true)]
[JsonSerializable(typeof(TrainConfig))]
public sealed partial class TrainConfigJson : JsonSerializerContext;

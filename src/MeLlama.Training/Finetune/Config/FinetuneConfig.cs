using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using MeLlama.Training.Config;

namespace MeLlama.Training.Finetune.Config;

/// <summary>
/// An instruction-tuning run, as read from a JSON recipe (snake_case keys) plus <c>--set</c> overrides. Model,
/// optimizer, schedule, eval and checkpoint sections are the pretraining recipe's own. The resolved copy is stored in
/// every checkpoint, so resume and export know exactly what produced it.
/// </summary>
public sealed record FinetuneConfig
{
    public string RunDir { get; set; } = "runs/finetune";
    /// <summary>Base model: model.init_from (HF folder, the normal case) or model.arch (random init, demos/tests); model.tokenizer.</summary>
    public ModelSection Model { get; set; } = new();
    public FinetuneDataSection Data { get; set; } = new();
    /// <summary>Chat template: "mellama", "llama2-chat", "none", or a custom object (user_format, assistant_format, ...).</summary>
    public JsonNode? Template { get; set; } = JsonValue.Create("mellama");
    /// <summary>"lora" (adapters on a frozen base) or "full" (every weight trains).</summary>
    public string Method { get; set; } = "lora";
    public LoraSection Lora { get; set; } = new();
    /// <summary>Predicted tokens per row; rows hold seq_len + 1 tokens.</summary>
    public int SeqLen { get; set; } = 1024;
    /// <summary>Pack several examples per row (true) or pad each example to seq_len (false).</summary>
    public bool Pack { get; set; } = true;
    /// <summary>Over-long examples keep at least this many context tokens (truncated from the left).</summary>
    public int MinPromptTokens { get; set; } = 16;
    /// <summary>Over-long examples that would keep fewer reply tokens than this are dropped.</summary>
    public int MinResponseTokens { get; set; } = 8;
    /// <summary>Passes over the training rows (fractions allowed); ignored when max_steps is set.</summary>
    public double Epochs { get; set; } = 3;
    public long? MaxSteps { get; set; }
    public int MicroBatch { get; set; } = 4;
    /// <summary>Rows per optimizer step = micro_batch × grad_accum, whatever the number of ranks (each rank trains on its block of them).</summary>
    public int GradAccum { get; set; } = 1;
    /// <summary>Several ranks (method full): parallel.strategy full_shard | shard_grad_op | no_shard, as in pretraining.</summary>
    public ParallelSection Parallel { get; set; } = new();
    public OptimizerSection Optimizer { get; set; } = new() { Lr = 1e-5, WeightDecay = 0.0 };
    public ScheduleSection Schedule { get; set; } = new() { WarmupRatio = 0.03, MinLrRatio = 0.0 };
    public ulong Seed { get; set; } = 1234;
    /// <summary>"fp32" or "bf16" (bf16 compute, fp32 master copies of the trained weights).</summary>
    public string Precision { get; set; } = "fp32";
    public string Device { get; set; } = "auto";
    /// <summary>torch intra-op threads; 0 = all cores.</summary>
    public int Threads { get; set; }
    public EvalSection Eval { get; set; } = new() { Interval = 200, Batches = 8 };
    public CheckpointSection Checkpoint { get; set; } = new() { Interval = 500, KeepLast = 2 };
    public int MaxBadSteps { get; set; } = 5;
    public int LogInterval { get; set; } = 1;
    public bool Tensorboard { get; set; } = true;
}

public sealed record FinetuneDataSection
{
    /// <summary>Instruction files (JSON or JSONL; Alpaca, ShareGPT/Me-LLaMA conversations, messages, prompt/completion, PubMedQA).</summary>
    public List<string> Train { get; set; } = [];
    /// <summary>Held-out instruction files; when empty, <see cref="EvalFraction"/> of the training examples is held out.</summary>
    public List<string> Eval { get; set; } = [];
    public double EvalFraction { get; set; }
    /// <summary>Use at most this many training examples (after the held-out split); null = all.</summary>
    public int? MaxExamples { get; set; }
    /// <summary>"error" (stop at the first malformed record, naming file and line) or "skip" (skip and count).</summary>
    public string Malformed { get; set; } = "error";
}

public sealed record LoraSection
{
    public int Rank { get; set; } = 8;
    public double Alpha { get; set; } = 16;
    public double Dropout { get; set; } = 0.05;
    public List<string> TargetModules { get; set; } = [.. Lora.LoraConfig.AllProjections];

    public Lora.LoraConfig ToLoraConfig() => new() { Rank = Rank, Alpha = Alpha, Dropout = Dropout, TargetModules = TargetModules.ToArray() };
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    ReadCommentHandling = System.Text.Json.JsonCommentHandling.Skip, AllowTrailingCommas = true)]
[JsonSerializable(typeof(FinetuneConfig))]
public sealed partial class FinetuneConfigJson : JsonSerializerContext;

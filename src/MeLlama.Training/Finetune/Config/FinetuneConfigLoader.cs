using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using MeLlama.Inference.ChatTemplates;
using MeLlama.Training.Config;

namespace MeLlama.Training.Finetune.Config;

/// <summary>
/// Reads a fine-tuning recipe (JSON with comments), applies <c>--set dotted.key=value</c> overrides and validates it.
/// Unknown keys are errors that name the key. Built-in recipe: "demo" (the pretraining demo's tiny architecture, random
/// init, built-in gpt2 tokenizer, LoRA, PubMedQA-style data given with --set data.train=[...]).
/// </summary>
public static class FinetuneConfigLoader
{
    public static IReadOnlyList<string> BuiltInNames { get; } = ["demo"];

    public static FinetuneConfig Load(string spec, IEnumerable<string>? overrides = null)
    {
        string text, source;
        if (File.Exists(spec)) { text = File.ReadAllText(spec); source = spec; }
        else if (spec == "demo") { text = ToJson(Demo()); source = "built-in finetune recipe 'demo'"; }
        else throw new ConfigError($"finetune config '{spec}' is neither a file nor a built-in recipe ({string.Join(", ", BuiltInNames)})");
        return Parse(text, source, overrides);
    }

    /// <summary>
    /// The demo: the architecture of the pretraining demo recipe (random init unless model.init_from is set), gpt2,
    /// LoRA on all projections, short rows; a few minutes on a laptop CPU.
    /// </summary>
    public static FinetuneConfig Demo()
    {
        var pretrain = ConfigLoader.Load("demo");
        return new FinetuneConfig
        {
            RunDir = "runs/finetune-demo",
            Model = pretrain.Model,
            Template = JsonValue.Create(ChatTemplateRegistry.MeLlama),
            Method = "lora",
            Lora = new LoraSection { Rank = 16, Alpha = 32, Dropout = 0.0 },
            SeqLen = 192,
            Epochs = 20,
            MicroBatch = 4,
            Optimizer = new OptimizerSection { Lr = 3e-3, WeightDecay = 0.0 },
            Schedule = new ScheduleSection { WarmupRatio = 0.05, MinLrRatio = 0.1 },
            Threads = pretrain.Threads,
            Eval = new EvalSection { Interval = 50, Batches = 4 },
            Checkpoint = new CheckpointSection { Interval = 100, KeepLast = 2 },
            Data = new FinetuneDataSection { Malformed = "skip" },
        };
    }

    public static FinetuneConfig Parse(string json, string source, IEnumerable<string>? overrides = null)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new ConfigError($"{source}{Line(e)}: {e.Message}"); }
        if (node is not JsonObject root) throw new ConfigError($"{source}: expected a JSON object");
        // Fill in defaults first so that overrides can name any key, then apply them.
        var config = Deserialize(root.ToJsonString(), source);
        var list = overrides?.ToList() ?? [];
        if (list.Count > 0)
        {
            var full = JsonSerializer.SerializeToNode(config, FinetuneConfigJson.Default.FinetuneConfig)!.AsObject();
            foreach (var assignment in list) JsonOverrides.Apply(full, assignment);
            config = Deserialize(full.ToJsonString(), source + " with --set overrides");
        }
        Validate(config, source);
        return config;
    }

    public static string ToJson(FinetuneConfig config) => JsonSerializer.Serialize(config, FinetuneConfigJson.Default.FinetuneConfig);

    static string Line(JsonException e) => e.LineNumber is { } l ? $" (line {l + 1})" : "";

    static FinetuneConfig Deserialize(string json, string source)
    {
        try
        {
            return JsonSerializer.Deserialize(json, FinetuneConfigJson.Default.FinetuneConfig) ?? throw new ConfigError($"{source}: empty config");
        }
        catch (JsonException e)
        {
            string where = e.Path is { } p ? $" at {p}" : "";
            throw new ConfigError($"{source}{where}{Line(e)}: {e.Message}");
        }
    }

    static void Validate(FinetuneConfig c, string source)
    {
        var errors = new List<string>();
        void Check(bool ok, string message) { if (!ok) errors.Add(message); }
        Check(!string.IsNullOrWhiteSpace(c.RunDir), "run_dir must be set");
        Check(c.Model.InitFrom is not null || c.Model.Arch is not null, "model.init_from (the base HF model folder) or model.arch (random init) must be set");
        Check(c.Model.InitFrom is not null || c.Model.Tokenizer is not null, "model.tokenizer must be set when there is no model.init_from to take it from");
        Check(c.Data.Train.Count > 0, "data.train must list at least one instruction file");
        Check(c.Data.EvalFraction is >= 0 and < 1, "data.eval_fraction must be in [0, 1)");
        Check(c.Data.MaxExamples is null or > 0, "data.max_examples must be > 0");
        Check(c.Data.Malformed is "error" or "skip", $"data.malformed must be error or skip, not '{c.Data.Malformed}'");
        Check(c.Method is "lora" or "full", $"method must be lora or full, not '{c.Method}'");
        if (c.Method == "lora")
        {
            try { c.Lora.ToLoraConfig().Validate(); }
            catch (ArgumentException e) { errors.Add(e.Message); }
        }
        try { ChatTemplateRegistry.FromJson(c.Template, "template"); }
        catch (FormatException e) { errors.Add(e.Message); }
        Check(c.SeqLen >= 8, "seq_len must be >= 8");
        Check(c.MinPromptTokens >= 0 && c.MinResponseTokens >= 1, "min_prompt_tokens must be >= 0 and min_response_tokens >= 1");
        Check(c.MinPromptTokens + c.MinResponseTokens <= c.SeqLen + 1, "min_prompt_tokens + min_response_tokens must fit in seq_len + 1");
        Check(c.MaxSteps is > 0 || (c.MaxSteps is null && c.Epochs > 0 && double.IsFinite(c.Epochs)), "set epochs (> 0) or max_steps (> 0)");
        Check(c.MicroBatch > 0 && c.GradAccum > 0, "micro_batch and grad_accum must be > 0");
        Check(ParallelSection.Strategies.Contains(c.Parallel.Strategy), $"parallel.strategy must be one of {string.Join(", ", ParallelSection.Strategies)}, not '{c.Parallel.Strategy}'");
        Check(c.Precision is "fp32" or "bf16", $"precision must be fp32 or bf16, not '{c.Precision}'");
        Check(c.Optimizer.Lr > 0, "optimizer.lr must be > 0");
        Check(c.Optimizer.Beta1 is >= 0 and < 1 && c.Optimizer.Beta2 is >= 0 and < 1, "optimizer.beta1/beta2 must be in [0,1)");
        Check(c.Optimizer.Eps > 0 && c.Optimizer.WeightDecay >= 0 && c.Optimizer.GradClip >= 0, "optimizer.eps must be > 0, weight_decay and grad_clip >= 0");
        Check(c.Schedule.WarmupRatio is >= 0 and < 1, "schedule.warmup_ratio must be in [0,1)");
        Check(c.Schedule.MinLr is null || (c.Schedule.MinLr >= 0 && c.Schedule.MinLr <= c.Optimizer.Lr), "schedule.min_lr must be in [0, optimizer.lr]");
        Check(c.Schedule.MinLrRatio is >= 0 and <= 1, "schedule.min_lr_ratio must be in [0,1]");
        Check(c.Eval.Interval >= 0 && c.Eval.Batches >= 0, "eval.interval and eval.batches must be >= 0");
        Check(c.Checkpoint.Interval > 0 && c.Checkpoint.KeepLast >= 1, "checkpoint.interval must be > 0 and checkpoint.keep_last >= 1");
        Check(c.MaxBadSteps >= 1 && c.LogInterval >= 1 && c.Threads >= 0, "max_bad_steps and log_interval must be >= 1, threads >= 0");
        if (c.Model.Arch is { } a && c.Model.InitFrom is null)
            Check(a.MaxPositionEmbeddings >= c.SeqLen + 1, "model.arch.max_position_embeddings must be >= seq_len + 1");
        if (errors.Count > 0) throw new ConfigError($"{source}: " + string.Join("; ", errors));
    }
}

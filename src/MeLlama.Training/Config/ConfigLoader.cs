using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MeLlama.Training.Config;

/// <summary>
/// Reads a training recipe (JSON with comments allowed), applies <c>--set key=value</c> overrides with dotted
/// keys (<c>optimizer.lr=1e-4</c>, <c>data.datasets.0.weight=2</c>) and validates the result. Unknown keys, in the
/// file or in an override, are errors that name the key and list the known ones at that level.
/// </summary>
public static class ConfigLoader
{
    const string ResourcePrefix = "MeLlama.Training.configs.";

    /// <summary>Names of the recipes built into the binary (configs/*.json of the repository).</summary>
    public static IReadOnlyList<string> BuiltInNames { get; } = typeof(ConfigLoader).Assembly.GetManifestResourceNames()
        .Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal) && n.EndsWith(".json", StringComparison.Ordinal))
        .Select(n => n[ResourcePrefix.Length..^".json".Length]).Order(StringComparer.Ordinal).ToArray();

    /// <summary>Loads <paramref name="spec"/>: a path to a JSON file, or the name of a built-in recipe ("demo").</summary>
    public static TrainConfig Load(string spec, IEnumerable<string>? overrides = null)
    {
        string text, source;
        if (File.Exists(spec)) { text = File.ReadAllText(spec); source = spec; }
        else if (BuiltInNames.Contains(spec)) { text = ReadBuiltIn(spec); source = $"built-in recipe '{spec}'"; }
        else throw new ConfigError($"config '{spec}' is neither a file nor a built-in recipe ({string.Join(", ", BuiltInNames)})");
        return Parse(text, source, overrides);
    }

    public static string ReadBuiltIn(string name)
    {
        using var stream = typeof(ConfigLoader).Assembly.GetManifestResourceStream(ResourcePrefix + name + ".json")
            ?? throw new ConfigError($"no built-in recipe '{name}'");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    public static TrainConfig Parse(string json, string source, IEnumerable<string>? overrides = null)
    {
        var config = Deserialize(json, source);
        var list = overrides?.ToList() ?? [];
        if (list.Count > 0)
        {
            var node = JsonSerializer.SerializeToNode(config, TrainConfigJson.Default.TrainConfig)!.AsObject();
            // A template shows which keys an absent (null) section would have.
            var template = JsonSerializer.SerializeToNode(Templates.Full, TrainConfigJson.Default.TrainConfig);
            foreach (var assignment in list) JsonOverrides.Apply(node, assignment, template);
            config = Deserialize(node.ToJsonString(), source + " with --set overrides");
        }
        Validate(config, source);
        return config;
    }

    public static string ToJson(TrainConfig config) => JsonSerializer.Serialize(config, TrainConfigJson.Default.TrainConfig);

    static TrainConfig Deserialize(string json, string source)
    {
        try
        {
            return JsonSerializer.Deserialize(json, TrainConfigJson.Default.TrainConfig) ?? throw new ConfigError($"{source}: empty config");
        }
        catch (JsonException e)
        {
            // System.Text.Json names the JSON path ($.optimizer.lrr) and line in its message.
            string where = e.Path is { } p ? $" at {p}" : "";
            string line = e.LineNumber is { } l ? $" (line {l + 1})" : "";
            throw new ConfigError($"{source}{where}{line}: {e.Message}");
        }
    }

    static void Validate(TrainConfig c, string source)
    {
        var errors = new List<string>();
        void Check(bool ok, string message) { if (!ok) errors.Add(message); }
        Check(!string.IsNullOrWhiteSpace(c.RunDir), "run_dir must be set");
        Check(c.SeqLen > 0, "seq_len must be > 0");
        Check(c.MicroBatch > 0, "micro_batch must be > 0");
        Check(c.GradAccum is null or > 0, "grad_accum must be > 0");
        Check(c.GlobalBatchTokens is null or > 0, "global_batch_tokens must be > 0");
        Check(c.Precision is "fp32" or "bf16", $"precision must be fp32 or bf16, not '{c.Precision}'");
        Check(c.Optimizer.Lr > 0, "optimizer.lr must be > 0");
        Check(c.Optimizer.Beta1 is >= 0 and < 1 && c.Optimizer.Beta2 is >= 0 and < 1, "optimizer.beta1/beta2 must be in [0,1)");
        Check(c.Optimizer.Eps > 0, "optimizer.eps must be > 0");
        Check(c.Optimizer.WeightDecay >= 0, "optimizer.weight_decay must be >= 0");
        Check(c.Optimizer.GradClip >= 0, "optimizer.grad_clip must be >= 0 (0 = off)");
        Check(c.Schedule.WarmupRatio is >= 0 and < 1, "schedule.warmup_ratio must be in [0,1)");
        Check(c.Schedule.MinLr is null || (c.Schedule.MinLr >= 0 && c.Schedule.MinLr <= c.Optimizer.Lr), "schedule.min_lr must be in [0, optimizer.lr]");
        Check(c.Schedule.MinLrRatio is >= 0 and <= 1, "schedule.min_lr_ratio must be in [0,1]");
        Check(c.MaxSteps is > 0 || c.MaxTokens is > 0, "set max_steps or max_tokens (> 0)");
        Check(c.Eval.Interval >= 0 && c.Eval.Batches >= 0, "eval.interval and eval.batches must be >= 0");
        Check(c.Checkpoint.Interval > 0, "checkpoint.interval must be > 0");
        Check(c.Checkpoint.KeepLast >= 1, "checkpoint.keep_last must be >= 1");
        Check(c.MaxBadSteps >= 1, "max_bad_steps must be >= 1");
        Check(c.LogInterval >= 1, "log_interval must be >= 1");
        Check(c.Threads >= 0, "threads must be >= 0");
        Check(ParallelSection.Strategies.Contains(c.Parallel.Strategy), $"parallel.strategy must be one of {string.Join(", ", ParallelSection.Strategies)}, not '{c.Parallel.Strategy}'");
        Check(c.Model.InitFrom is not null || c.Model.Arch is not null, "model.init_from (HF folder) or model.arch (random init) must be set");
        Check(c.Model.InitStd > 0, "model.init_std must be > 0");
        Check(c.Data.Datasets.Count > 0, "data.datasets must list at least one prepared dataset");
        for (int i = 0; i < c.Data.Datasets.Count; i++)
        {
            var d = c.Data.Datasets[i];
            Check(d.Name.Length > 0 && d.Path.Length > 0, $"data.datasets.{i}: name and path must be set");
            Check(d.Weight > 0 && double.IsFinite(d.Weight), $"data.datasets.{i}.weight must be > 0");
        }
        for (int i = 0; i < c.Data.EvalSets.Count; i++)
            Check(c.Data.EvalSets[i].Name.Length > 0 && c.Data.EvalSets[i].Path.Length > 0, $"data.eval_sets.{i}: name and path must be set");
        if (c.Model.Arch is { } a)
        {
            Check(a.HiddenSize > 0 && a.NumHiddenLayers > 0 && a.NumAttentionHeads > 0 && a.IntermediateSize > 0, "model.arch sizes must be > 0");
            Check(a.HiddenSize % a.NumAttentionHeads == 0, "model.arch.hidden_size must be divisible by num_attention_heads");
            int kv = a.NumKeyValueHeads ?? a.NumAttentionHeads;
            Check(kv > 0 && a.NumAttentionHeads % kv == 0, "model.arch.num_attention_heads must be divisible by num_key_value_heads");
            Check(a.MaxPositionEmbeddings >= c.SeqLen, "model.arch.max_position_embeddings must be >= seq_len");
        }
        if (errors.Count > 0) throw new ConfigError($"{source}: " + string.Join("; ", errors));
    }

    /// <summary>Configs with every optional section present, so overrides can name keys inside absent sections.</summary>
    static class Templates
    {
        public static readonly TrainConfig Full = new()
        {
            Model = new ModelSection { Arch = new ArchSection() },
            Data = new DataSection { Datasets = [new DomainSource()], EvalSets = [new DomainSource()] },
        };
    }
}

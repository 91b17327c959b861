using MeLlama.Training.Engine.Sharded;
using System.CommandLine;
using System.Globalization;
using MeLlama.Model;
using MeLlama.Training.Config;
using MeLlama.Training.Planning;

namespace MeLlama.Cli.Commands;

/// <summary>
/// <c>mellama plan --config FILE --gpus N --gpu-memory 80GB [...]</c>: per-GPU memory of a training step under a
/// sharding strategy (<see cref="MemoryPlanner"/>), whether it fits, and the Me-LLaMA reality check.
/// Exit codes: 0 fits, 1 does not fit, 2 bad input (the message names the option or recipe key).
/// </summary>
public static class PlanCommand
{
    public const int Fits = 0, DoesNotFit = 1, BadInput = 2;

    // Numbers and booleans are read as strings and parsed here, so a malformed value is exit code 2 with the
    // option's name (System.CommandLine's own parse errors exit 1, which here means "does not fit").
    static readonly Option<string?> ConfigOption = new("--config", "-c") { Description = $"Training recipe: a JSON file or a built-in name ({string.Join(", ", ConfigLoader.BuiltInNames)})" };
    static readonly Option<string[]> SetOption = new("--set") { Description = "Override a recipe key, e.g. --set micro_batch=2 --set seq_len=2048 (repeatable)" };
    static readonly Option<string?> GpusOption = new("--gpus") { Description = "Number of GPUs (data-parallel ranks)" };
    static readonly Option<string?> MemoryOption = new("--gpu-memory") { Description = "Memory per GPU: 80GB (SI, 80·10⁹ B), 80GiB or 81920MiB (what nvidia-smi shows for an 80GB A100/H100)" };
    static readonly Option<string> StrategyOption = new("--strategy") { Description = "full_shard (ZeRO-3, default), shard_grad_op (ZeRO-2) or no_shard (DDP)", DefaultValueFactory = _ => "full_shard" };
    static readonly Option<string?> PrecisionOption = new("--precision") { Description = "fp32 or bf16 (default: the recipe's precision)" };
    static readonly Option<string?> CheckpointingOption = new("--activation-checkpointing") { Description = "true or false (default: the recipe's activation_checkpointing)" };
    static readonly Option<string> MarginOption = new("--margin") { Description = "Reserve per GPU for CUDA context, NCCL buffers and fragmentation", DefaultValueFactory = _ => "2GiB" };
    static readonly Option<string?> ModelConfigOption = new("--model-config") { Description = "HF config.json (or its folder) when the recipe's model.init_from is not on this machine" };
    static readonly Option<string?> PresetOption = new("--preset") { Description = "LLaMA-2 shape when model.init_from is not on this machine: 7b, 13b or 70b" };
    static readonly Option<bool> ResidentOption = new("--resident-parameters") { Description = "full_shard: count full-size compute parameters as resident (an engine that does not free gathered units after use)" };

    public static Command Create()
    {
        var command = new Command("plan", "Per-GPU memory of a training step (parameters, fp32 masters, gradients, AdamW state, activations, logits) and whether it fits.\n" +
                                          "Exit codes: 0 fits; 1 does not fit; 2 bad input.");
        foreach (var o in new Option[] { ConfigOption, SetOption, GpusOption, MemoryOption, StrategyOption, PrecisionOption, CheckpointingOption, MarginOption, ModelConfigOption, PresetOption, ResidentOption })
            command.Options.Add(o);
        command.SetAction(Execute);
        return command;
    }

    static ShardingStrategy ParseStrategy(string text)
    {
        try { return ShardingStrategies.Parse(text); }
        catch (FormatException e) { throw new ConfigError($"--strategy: {e.Message}"); }
    }

    static int Execute(ParseResult parse)
    {
        var stdout = parse.InvocationConfiguration.Output;
        var stderr = parse.InvocationConfiguration.Error;
        MemoryPlanRequest request;
        PlanModel model;
        string recipe;
        try
        {
            recipe = parse.GetValue(ConfigOption) ?? throw new ConfigError("--config: required (a recipe file or a built-in name)");
            var config = ConfigLoader.Load(recipe, parse.GetValue(SetOption) ?? []);
            model = PlanModelResolver.Resolve(config, parse.GetValue(ModelConfigOption), parse.GetValue(PresetOption));
            string precision = parse.GetValue(PrecisionOption) ?? config.Precision;
            if (precision is not ("fp32" or "bf16")) throw new ConfigError($"--precision: '{precision}' is not fp32 or bf16");
            request = new MemoryPlanRequest
            {
                Model = model.Config,
                Gpus = PositiveInt(parse.GetValue(GpusOption), "--gpus"),
                GpuMemoryBytes = ByteSize.Parse(parse.GetValue(MemoryOption) ?? throw new ConfigError("--gpu-memory: required (e.g. 80GB, 80GiB)"), "--gpu-memory"),
                Strategy = ParseStrategy(parse.GetValue(StrategyOption)!),
                Precision = precision,
                ActivationCheckpointing = Bool(parse.GetValue(CheckpointingOption), "--activation-checkpointing") ?? config.ActivationCheckpointing,
                MicroBatch = config.MicroBatch,
                SeqLen = config.SeqLen,
                MarginBytes = ByteSize.Parse(parse.GetValue(MarginOption)!, "--margin"),
                ResidentComputeParameters = parse.GetValue(ResidentOption),
            }.Validate();
        }
        catch (Exception e)
        {
            return CommandFailures.Report(e, stderr, "plan");
        }

        var plan = MemoryPlanner.Plan(request);
        Print(stdout, plan, model, recipe);
        stdout.WriteLine();
        PrintRealityCheck(stdout);
        return plan.Fits ? Fits : DoesNotFit;
    }

    static int PositiveInt(string? text, string field)
    {
        if (text is null) throw new ConfigError($"{field}: required");
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < 1)
            throw new ConfigError($"{field}: '{text}' is not a positive whole number");
        return n;
    }

    static bool? Bool(string? text, string field) => text switch
    {
        null => null,
        "true" => true,
        "false" => false,
        _ => throw new ConfigError($"{field}: '{text}' is not true or false"),
    };

    static void Print(TextWriter w, MemoryPlan plan, PlanModel model, string recipe)
    {
        var r = plan.Request;
        var c = r.Model;
        w.WriteLine($"Recipe {recipe}; model from {model.Source}: {Billions(c.ParameterCount())} parameters " +
                    $"(d={c.HiddenSize}, {c.NumLayers} layers, {c.NumHeads} heads / {c.NumKvHeads} kv, ffn {c.IntermediateSize}, vocab {c.VocabSize})");
        w.WriteLine($"{r.Gpus} GPU(s) × {ByteSize.Gib(r.GpuMemoryBytes)}, {r.Strategy.ToName()}, {r.Precision}, " +
                    $"activation checkpointing {(r.ActivationCheckpointing ? "on" : "off")}, micro-batch {r.MicroBatch} × seq_len {r.SeqLen}");
        w.WriteLine();
        w.WriteLine("| per GPU | GiB | what |");
        w.WriteLine("| --- | ---: | --- |");
        foreach (var line in plan.Lines)
            w.WriteLine($"| {line.Name} | {Gib(line.Bytes)} | {line.Detail} |");
        w.WriteLine($"| **total** | **{Gib(plan.TotalBytes)}** | of {Gib(r.GpuMemoryBytes)} |");
        w.WriteLine();
        w.WriteLine(plan.Fits
            ? $"fits: yes, headroom {ByteSize.Gib(plan.HeadroomBytes)} per GPU"
            : $"fits: NO, short by {ByteSize.Gib(-plan.HeadroomBytes)} per GPU");
    }

    static string Billions(long n) => n >= 1_000_000_000 ? $"{n / 1e9:F2}B" : $"{n / 1e6:F1}M";

    static string Gib(long bytes) => (bytes / (double)(1L << 30)).ToString("F2", CultureInfo.InvariantCulture);

    /// <summary>The Me-LLaMA 70B setting (160 A100-80GB) against a single 8-GPU node, LLaMA-2 70B, bf16, checkpointing, 1×4096.</summary>
    static void PrintRealityCheck(TextWriter w)
    {
        w.WriteLine("Me-LLaMA reality check (LLaMA-2 70B, bf16, full_shard, activation checkpointing, micro-batch 1 × 4096, 80GB = 80·10⁹ B per GPU):");
        foreach (int gpus in new[] { 160, 8 })
        {
            var p = MemoryPlanner.Plan(new MemoryPlanRequest { Model = LlamaConfig.Llama2_70B, Gpus = gpus, GpuMemoryBytes = 80_000_000_000 });
            w.WriteLine($"  {gpus,3} × 80GB: {ByteSize.Gib(p.TotalBytes)} per GPU → {(p.Fits ? "fits" : "does not fit")}" +
                        $" (masters + grads + AdamW {ByteSize.Gib(p["fp32 master"] + p["gradients"] + p["AdamW moments"])})");
        }
    }
}

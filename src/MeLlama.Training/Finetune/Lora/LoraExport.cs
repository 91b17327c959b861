using System.Text.Json;
using System.Text.Json.Nodes;
using MeLlama.Core.IO;
using MeLlama.Model;
using MeLlama.Inference.ChatTemplates;
using MeLlama.Tokenization;
using static TorchSharp.torch;

namespace MeLlama.Training.Finetune.Lora;

/// <summary>
/// Getting LoRA fine-tunes out: merged into the base weights as a complete HF model folder, or as a separate adapter
/// in PEFT's layout (adapter_config.json + adapter_model.safetensors with <c>base_model.model.</c>-prefixed names) that
/// <c>PeftModel.from_pretrained(base, dir)</c> and vLLM's LoRA support load.
/// </summary>
public static class LoraExport
{
    public const string AdapterConfigFile = "adapter_config.json";
    public const string AdapterWeightsFile = "adapter_model.safetensors";
    /// <summary>PEFT wraps the causal LM as base_model.model, so HF parameter names get this prefix.</summary>
    public const string PeftPrefix = "base_model.model.";

    /// <summary>Folds every adapter into its base weight (W + (alpha/r)·B·A); the model then computes the same function without adapters.</summary>
    public static void MergeInto(LoraModel lora) => lora.Merge();

    /// <summary>
    /// Writes a complete HF model folder holding the merged weights in <paramref name="dtype"/>, the tokenizer files with the
    /// chat template as Jinja, and our template file. The adapters are merged for the write and unmerged after.
    /// </summary>
    public static void WriteMergedModel(LoraModel lora, string outDir, ScalarType dtype, ITextTokenizer? tokenizer, IChatTemplate? template,
        Action<string>? writeExtraFiles = null)
    {
        bool wasMerged = lora.Merged;
        lora.Merge();
        try
        {
            FinetunedModelWriter.Write(lora.Model.Config, lora.BaseParameters().ToList(), outDir, dtype, tokenizer, template, writeExtraFiles);
        }
        finally
        {
            if (!wasMerged) lora.Unmerge();
        }
    }

    /// <summary>
    /// Writes the adapters in PEFT's layout (fp32 weights), plus tokenizer files and the chat template when given, so the
    /// folder is self-describing. <paramref name="baseModelNameOrPath"/> goes into adapter_config.json.
    /// </summary>
    public static void WritePeftAdapter(LoraModel lora, string outDir, string baseModelNameOrPath, ITextTokenizer? tokenizer = null, IChatTemplate? template = null,
        Action<string>? writeExtraFiles = null)
    {
        if (lora.Merged) throw new InvalidOperationException("adapters are merged into the base weights; unmerge before writing them separately");
        string target = Path.GetFullPath(outDir);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        string temp = AtomicFile.TempName(target);
        Directory.CreateDirectory(temp);
        try
        {
            AtomicFile.WriteAllText(Path.Combine(temp, AdapterConfigFile), AdapterConfigJson(lora.Config, baseModelNameOrPath));
            SafeTensorsWriter.Write(Path.Combine(temp, AdapterWeightsFile),
                lora.AdapterParameters().Select(p => (PeftPrefix + p.Name, (Tensor)p.Parameter)),
                new Dictionary<string, string> { ["format"] = "pt" }, ScalarType.Float32);
            if (tokenizer is not null) tokenizer.SaveHfFiles(temp, template?.ToJinja());
            if (template is not null) ChatTemplateStore.Write(temp, template);
            writeExtraFiles?.Invoke(temp);
            AtomicFile.FsyncDirectory(temp);
            AtomicFile.Commit(temp, target);
        }
        finally
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        }
    }

    public static string AdapterConfigJson(LoraConfig config, string baseModelNameOrPath)
    {
        var root = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = "CAUSAL_LM",
            ["base_model_name_or_path"] = baseModelNameOrPath,
            ["r"] = config.Rank,
            ["lora_alpha"] = config.Alpha == Math.Floor(config.Alpha) ? JsonValue.Create((long)config.Alpha) : JsonValue.Create(config.Alpha),
            ["lora_dropout"] = config.Dropout,
            ["target_modules"] = new JsonArray(config.TargetModules.Select(t => (JsonNode?)JsonValue.Create(t)).ToArray()),
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["modules_to_save"] = null,
            ["layers_to_transform"] = null,
            ["layers_pattern"] = null,
            ["rank_pattern"] = new JsonObject(),
            ["alpha_pattern"] = new JsonObject(),
            ["use_rslora"] = false,
            ["use_dora"] = false,
            ["revision"] = null,
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    /// <summary>Reads adapter_config.json; refuses PEFT options that would change the math (rsLoRA, DoRA, biases, per-layer ranks).</summary>
    public static (LoraConfig Config, string? BaseModel) ReadPeftConfig(string adapterDir)
    {
        string path = Path.Combine(adapterDir, AdapterConfigFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"{adapterDir} has no {AdapterConfigFile}", path);
        JsonObject root;
        try { root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: expected a JSON object"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message})", e); }
        string? peftType = root["peft_type"]?.GetValue<string>();
        if (peftType != "LORA") throw new InvalidDataException($"{path}: peft_type is \"{peftType}\", only LORA is supported");
        foreach (var flag in new[] { "use_rslora", "use_dora", "fan_in_fan_out" })
            if (root[flag] is JsonNode n && n.GetValueKind() == JsonValueKind.True) throw new InvalidDataException($"{path}: {flag}=true is not supported");
        if (root["bias"] is JsonNode bias && bias.GetValueKind() == JsonValueKind.String && bias.GetValue<string>() != "none")
            throw new InvalidDataException($"{path}: bias \"{bias.GetValue<string>()}\" is not supported (only \"none\")");
        foreach (var pattern in new[] { "rank_pattern", "alpha_pattern" })
            if (root[pattern] is JsonObject o && o.Count > 0) throw new InvalidDataException($"{path}: {pattern} is not supported");
        if (root["target_modules"] is not JsonArray targets)
            throw new InvalidDataException($"{path}: target_modules must be a list of module names");
        try
        {
            var config = new LoraConfig
            {
                Rank = root["r"]?.GetValue<int>() ?? throw new InvalidDataException($"{path}: r is missing"),
                Alpha = root["lora_alpha"]?.GetValue<double>() ?? throw new InvalidDataException($"{path}: lora_alpha is missing"),
                Dropout = root["lora_dropout"]?.GetValue<double>() ?? 0,
                TargetModules = targets.Select(t => t!.GetValue<string>()).ToArray(),
            }.Validate();
            return (config, root["base_model_name_or_path"]?.GetValue<string>());
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }

    /// <summary>Attaches the adapters of a PEFT folder to <paramref name="model"/> (which gets frozen).</summary>
    public static LoraModel LoadPeftAdapter(LlamaForCausalLM model, string adapterDir)
    {
        var (config, _) = ReadPeftConfig(adapterDir);
        var lora = LoraModel.Apply(model, config);
        try
        {
            string weights = Path.Combine(adapterDir, AdapterWeightsFile);
            using var reader = SafeTensorsReader.Open(weights);
            var expected = lora.AdapterParameters().Select(p => PeftPrefix + p.Name).ToHashSet(StringComparer.Ordinal);
            foreach (var name in reader.Entries.Keys)
                if (!expected.Contains(name)) throw new InvalidDataException($"{weights}: tensor {name} does not match an adapter of this model and config");
            lora.LoadAdapterWeights(name => reader.Entries.ContainsKey(PeftPrefix + name) ? reader.ReadTensor(PeftPrefix + name, model.Dtype, model.Device) : null, weights);
            return lora;
        }
        catch
        {
            lora.Dispose();
            throw;
        }
    }
}

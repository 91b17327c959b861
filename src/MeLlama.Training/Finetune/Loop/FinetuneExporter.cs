using MeLlama.Model;
using System.Text.Json;
using MeLlama.Core.IO;
using MeLlama.Tokenization;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using MeLlama.Training.Export;
using MeLlama.Training.Finetune.Config;
using MeLlama.Training.Finetune.Lora;
using Serilog;
using static TorchSharp.torch;

namespace MeLlama.Training.Finetune.Loop;

/// <summary>How LoRA adapters leave a fine-tuning checkpoint.</summary>
public enum AdapterExportMode
{
    /// <summary>Folded into the base weights (W + (alpha/r)·B·A): a complete, ordinary HF model folder.</summary>
    Merge,
    /// <summary>A separate adapter in PEFT's layout (adapter_config.json + adapter_model.safetensors) for the base model.</summary>
    Peft,
}

/// <summary>
/// `mellama export` for fine-tuning checkpoints (called by the export command when the checkpoint holds
/// finetune_config.json). Rebuilds base + trained weights on the CPU in fp32 and writes a HF folder whose tokenizer files
/// carry the chat template, or a PEFT adapter folder.
/// </summary>
public static class FinetuneExporter
{
    public static AdapterExportMode ParseMode(string text) => text.ToLowerInvariant() switch
    {
        "merge" or "merged" => AdapterExportMode.Merge,
        "peft" or "adapter" => AdapterExportMode.Peft,
        _ => throw new ArgumentException($"--adapter-mode must be merge or peft, not '{text}'"),
    };

    /// <summary>True when <paramref name="checkpointOrRunDir"/> is (or resolves to) a fine-tuning checkpoint.</summary>
    public static bool IsFinetune(string checkpointOrRunDir, ILogger? log = null)
    {
        if (FinetuneCheckpointFiles.IsFinetuneCheckpoint(checkpointOrRunDir)) return true;
        // A run folder: its resolved config sits at the top.
        return File.Exists(Path.Combine(checkpointOrRunDir, FinetuneCheckpointFiles.Config)) && Directory.Exists(Path.Combine(checkpointOrRunDir, "checkpoints"));
    }

    public static string Export(string checkpointOrRunDir, string outDir, ScalarType dtype, AdapterExportMode mode, string? tokenizerSpec = null, ILogger? log = null)
    {
        log ??= Serilog.Core.Logger.None;
        string dir = HfExporter.ResolveCheckpoint(checkpointOrRunDir, log);
        var check = CheckpointStore.Check(dir, full: true);
        if (!check.Ok) throw new InvalidDataException($"checkpoint {dir} is not usable: {check.Problem}");
        if (!FinetuneCheckpointFiles.IsFinetuneCheckpoint(dir)) throw new InvalidDataException($"{dir} is not a fine-tuning checkpoint (no {FinetuneCheckpointFiles.Config})");
        var config = FinetuneConfigLoader.Parse(File.ReadAllText(Path.Combine(dir, FinetuneCheckpointFiles.Config)), Path.Combine(dir, FinetuneCheckpointFiles.Config));
        var tokenizer = tokenizerSpec is null ? FinetuneModelBuilder.LoadTokenizer(config) : TokenizerLoader.Load(tokenizerSpec);
        var template = FinetuneModelBuilder.LoadTemplate(config);
        string? storedBase = config.Model.InitFrom is null && config.Method == "lora" ? Path.Combine(dir, FinetuneCheckpointFiles.BaseModel) : null;

        string full = Path.GetFullPath(outDir);
        if (ShardedCheckpoint.IsSharded(dir))
        {
            // Sharded runs train every weight (method full): the consolidated slices are the whole model, so the base is
            // not rebuilt (a 70B base would be read for nothing).
            if (config.Method != "full") throw new InvalidDataException($"{dir} is sharded but was trained with method {config.Method}");
            var modelConfig = LlamaConfig.FromHfJson(Path.Combine(dir, CheckpointFiles.ModelConfig));
            var consolidated = HfExporter.ReadWeights(dir);
            try { FinetunedModelWriter.Write(modelConfig, consolidated, full, dtype, tokenizer, template, Provenance); }
            finally { foreach (var (_, t) in consolidated) t.Dispose(); }
            log.Information("Exported sharded fine-tuning checkpoint {Checkpoint} (step {Step}, full) to {Out}; chat template {Template}", dir, check.Step, full, template.Id);
            return full;
        }

        using var built = FinetuneModelBuilder.Build(config, tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId, CPU, ScalarType.Float32, storedBase);
        string weights = Path.Combine(dir, CheckpointFiles.Model);
        using (var reader = SafeTensorsReader.Open(weights))
        {
            if (built.Lora is { } lora)
                lora.LoadAdapterWeights(name => reader.Entries.ContainsKey(name) ? reader.ReadTensor(name, ScalarType.Float32) : null, weights);
            else
            {
                using var _ = no_grad();
                foreach (var (name, p) in built.Model.named_parameters())
                {
                    if (!reader.Entries.ContainsKey(name)) throw new InvalidDataException($"{weights}: tensor {name} is missing");
                    using var t = reader.ReadTensor(name, ScalarType.Float32);
                    p.copy_(t);
                }
            }
        }

        void Provenance(string folder) => AtomicFile.WriteAllText(Path.Combine(folder, "mellama_export.json"), JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["checkpoint"] = Path.GetFullPath(dir),
            ["step"] = check.Step,
            ["method"] = config.Method,
            ["adapter_mode"] = config.Method == "lora" ? mode.ToString().ToLowerInvariant() : null,
            ["base_model"] = config.Model.InitFrom,
            ["template"] = template.Id,
            ["dtype"] = dtype.ToString(),
            ["tokenizer"] = tokenizer.Name,
        }) + "\n");

        if (built.Lora is null)
            FinetunedModelWriter.Write(built.Model.Config, built.Model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).ToList(), full, dtype, tokenizer, template, Provenance);
        else if (mode == AdapterExportMode.Merge)
            LoraExport.WriteMergedModel(built.Lora, full, dtype, tokenizer, template, Provenance);
        else
        {
            if (config.Model.InitFrom is null)
                log.Warning("The base model was randomly initialised (no model.init_from): the PEFT adapter is only usable with that exact base; prefer --adapter-mode merge");
            LoraExport.WritePeftAdapter(built.Lora, full, config.Model.InitFrom ?? "random-init", tokenizer, template, Provenance);
        }
        log.Information("Exported fine-tuning checkpoint {Checkpoint} (step {Step}, {Method}{Mode}) to {Out}; chat template {Template}",
            dir, check.Step, config.Method, built.Lora is null ? "" : $", adapters {mode.ToString().ToLowerInvariant()}", full, template.Id);
        return full;
    }
}

using MeLlama.Inference.ChatTemplates;
using MeLlama.Model;
using MeLlama.Tokenization;
using MeLlama.Training.Config;
using MeLlama.Training.Finetune.Config;
using MeLlama.Training.Finetune.Lora;
using MeLlama.Training.Loop;
using static TorchSharp.torch;

namespace MeLlama.Training.Finetune.Loop;

/// <summary>File names a fine-tuning checkpoint adds to the pretraining ones (<see cref="Engine.CheckpointFiles"/>).</summary>
public static class FinetuneCheckpointFiles
{
    /// <summary>The resolved <see cref="FinetuneConfig"/>; its presence marks a fine-tuning checkpoint.</summary>
    public const string Config = "finetune_config.json";
    /// <summary>Frozen base weights, stored only when the base was randomly initialised (no HF folder to reload it from).</summary>
    public const string BaseModel = "base_model.safetensors";

    public static bool IsFinetuneCheckpoint(string dir) => File.Exists(Path.Combine(dir, Config));
}

/// <summary>A model ready to fine-tune or export: base weights, plus adapters under LoRA.</summary>
public sealed class FinetuneModel(LlamaForCausalLM model, LoraModel? lora) : IDisposable
{
    public LlamaForCausalLM Model { get; } = model;
    public LoraModel? Lora { get; } = lora;

    public void Dispose()
    {
        Lora?.Dispose();
        Model.Dispose();
    }
}

/// <summary>Builds the base model, tokenizer and template a fine-tuning config describes (for training, resume and export alike).</summary>
public static class FinetuneModelBuilder
{
    public static ITextTokenizer LoadTokenizer(FinetuneConfig c)
    {
        if (c.Model.Tokenizer is { } spec) return TokenizerLoader.Load(spec);
        string hf = c.Model.InitFrom ?? throw new ConfigError("model.tokenizer is not set and there is no model.init_from to take it from");
        return TokenizerLoader.TryLoadFromModelFolder(hf)
            ?? throw new ConfigError($"{hf} has no tokenizer (tokenizer.model); set model.tokenizer");
    }

    public static IChatTemplate LoadTemplate(FinetuneConfig c)
    {
        try { return ChatTemplateRegistry.FromJson(c.Template, "template"); }
        catch (FormatException e) { throw new ConfigError(e.Message); }
    }

    /// <summary>
    /// The base model on <paramref name="device"/> in <paramref name="dtype"/>: from model.init_from, or (random init) from
    /// model.arch with the run's seed, or from a checkpoint's stored base weights (<paramref name="baseWeightsFile"/>).
    /// With method lora the base is frozen and adapters are attached (A drawn from the run's seed).
    /// </summary>
    public static FinetuneModel Build(FinetuneConfig c, int tokenizerVocab, int bos, int eos, Device device, ScalarType dtype, string? baseWeightsFile = null)
    {
        LlamaForCausalLM model;
        if (c.Model.InitFrom is { } hf) model = HfCheckpoint.LoadModel(hf, device, dtype);
        else
        {
            var config = ModelFactory.FromArch(c.Model.Arch!, c.Model.InitStd, tokenizerVocab, bos, eos);
            if (baseWeightsFile is null) model = ModelFactory.RandomInit(config, device, dtype, c.Seed);
            else
            {
                model = ModelFactory.Empty(config, device, dtype);
                using var reader = SafeTensorsReader.Open(baseWeightsFile);
                using var _ = no_grad();
                foreach (var (name, p) in model.named_parameters())
                {
                    using var t = reader.ReadTensor(name, dtype, device);
                    p.copy_(t);
                }
            }
        }
        if (tokenizerVocab > model.Config.VocabSize)
        {
            model.Dispose();
            throw new ConfigError($"the tokenizer has {tokenizerVocab} ids but the model's vocabulary only {model.Config.VocabSize}");
        }
        if (c.Method != "lora") return new FinetuneModel(model, null);
        return new FinetuneModel(model, LoraModel.Apply(model, c.Lora.ToLoraConfig(), unchecked((long)c.Seed)));
    }
}

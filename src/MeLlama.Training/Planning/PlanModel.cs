using MeLlama.Model;
using MeLlama.Tokenization;
using MeLlama.Training.Config;
using MeLlama.Training.Loop;

namespace MeLlama.Training.Planning;

/// <summary>Where the planner's model shape came from, for the printout.</summary>
public sealed record PlanModel(LlamaConfig Config, string Source);

/// <summary>
/// Finds the model shape a recipe trains: <c>--model-config</c> (an HF config.json or a folder holding one) or
/// <c>--preset</c> first, then model.init_from's config.json when that folder is on this machine, then model.arch.
/// A recipe whose init_from folder is elsewhere (the cluster) needs one of the first two; the error says so.
/// </summary>
public static class PlanModelResolver
{
    /// <summary>LLaMA-2's published shapes (meta-llama/Llama-2-*-hf config.json).</summary>
    public static LlamaConfig Preset(string name, string field = "--preset") => name.ToLowerInvariant() switch
    {
        "7b" => LlamaConfig.Llama2_7B,
        "13b" => LlamaConfig.Llama2_13B,
        "70b" => LlamaConfig.Llama2_70B,
        _ => throw new ConfigError($"{field}: '{name}' is not a preset (7b, 13b, 70b)"),
    };

    public static PlanModel Resolve(TrainConfig config, string? modelConfigPath, string? preset)
    {
        if (modelConfigPath is not null && preset is not null)
            throw new ConfigError("--model-config and --preset: give one, not both");
        if (preset is not null) return new PlanModel(Preset(preset), $"preset LLaMA-2 {preset.ToUpperInvariant()}");
        if (modelConfigPath is not null) return FromHf(modelConfigPath, "--model-config");
        if (config.Model.InitFrom is { } init)
        {
            if (File.Exists(Path.Combine(init, "config.json"))) return FromHf(init, "model.init_from");
            throw new ConfigError($"model.init_from: '{init}' has no config.json on this machine; give its shape with " +
                                  "--model-config PATH/config.json or --preset 7b|13b|70b");
        }
        if (config.Model.Arch is { } arch)
        {
            int? vocab = arch.VocabSize;
            string source = "model.arch";
            if (vocab is null && config.Model.Tokenizer is { } tok)
            {
                // The trainer takes the vocabulary from the tokenizer when the recipe leaves it out; so do we.
                try { vocab = TokenizerLoader.Load(tok).VocabSize; source += $" (vocab from tokenizer '{tok}')"; }
                catch (Exception e) when (e is IOException or InvalidDataException or NotSupportedException or ArgumentException)
                {
                    throw new ConfigError($"model.arch.vocab_size: not set and tokenizer '{tok}' could not be loaded ({e.Message})");
                }
            }
            try { return new PlanModel(ModelFactory.FromArch(arch, config.Model.InitStd, vocab), source); }
            catch (ArgumentException e) { throw new ConfigError($"model.arch: {e.Message}"); }
        }
        throw new ConfigError("model: neither model.init_from nor model.arch is set");
    }

    static PlanModel FromHf(string path, string field)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, "config.json") : path;
        if (!File.Exists(file)) throw new ConfigError($"{field}: '{file}' does not exist");
        try { return new PlanModel(LlamaConfig.FromHfJson(file), file); }
        catch (InvalidDataException e) { throw new ConfigError($"{field}: {e.Message}"); }
    }
}

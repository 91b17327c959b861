using System.Text.Json;
using System.Text.Json.Nodes;
using MeLlama.Core.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// Hugging Face model folders (config.json + safetensors weights) in and out, so that checkpoints move
/// between MeLlama, transformers and vLLM unchanged.
/// </summary>
public static class HfCheckpoint
{
    public const long DefaultMaxShardBytes = 5L << 30;

    /// <summary>Tensors some HF checkpoints carry that are not parameters (recomputed at load time).</summary>
    static bool IsIgnorable(string name) => name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal);

    public static LlamaConfig LoadConfig(string hfDir)
    {
        string path = Path.Combine(hfDir, "config.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"{hfDir} has no config.json", path);
        return LlamaConfig.FromHfJson(path);
    }

    /// <summary>
    /// Builds the model described by <c>config.json</c> on <paramref name="device"/> in <paramref name="dtype"/>
    /// and reads the weights into it tensor by tensor (converting from the stored dtype as needed).
    /// </summary>
    public static LlamaForCausalLM LoadModel(string hfDir, Device? device = null, ScalarType dtype = ScalarType.Float32)
    {
        var config = LoadConfig(hfDir);
        var model = new LlamaForCausalLM(config, device, dtype, initialize: false);
        try
        {
            LoadWeights(model, hfDir);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads every parameter of <paramref name="model"/> from the folder's safetensors. Fails (naming the
    /// tensor) on a missing tensor, a shape mismatch, or a tensor the model has no place for.
    /// </summary>
    public static void LoadWeights(LlamaForCausalLM model, string hfDir)
    {
        using var checkpoint = SafeTensorsCheckpoint.Open(hfDir);
        var parameters = model.named_parameters().ToList();
        var expected = parameters.Select(p => p.name).ToHashSet(StringComparer.Ordinal);
        foreach (var name in checkpoint.Names)
        {
            bool tiedHead = name == "lm_head.weight" && model.Config.TieWordEmbeddings;
            if (!expected.Contains(name) && !tiedHead && !IsIgnorable(name))
                throw new InvalidDataException($"checkpoint {hfDir}: tensor \"{name}\" does not belong to a LLaMA model with this config.json");
        }
        foreach (var (name, _) in parameters)
        {
            if (!checkpoint.Contains(name))
                throw new InvalidDataException($"checkpoint {hfDir}: tensor \"{name}\" is missing");
        }
        // Tensors are independent, so several are read at once: one reader's page faults and copying (filling fresh
        // parameter memory costs about as much CPU as the copy itself) overlap another's disk reads.
        try
        {
            Parallel.ForEach(parameters, new ParallelOptions { MaxDegreeOfParallelism = Math.Clamp(Environment.ProcessorCount, 1, 8) },
                p => checkpoint.ReadInto(p.name, p.parameter));
        }
        catch (AggregateException e)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
        }
    }

    /// <summary>
    /// Writes a complete HF model folder: config.json, generation_config.json, and the weights in
    /// <paramref name="dtype"/> as safetensors (model.safetensors, or model-0000i-of-0000n.safetensors +
    /// model.safetensors.index.json when larger than <paramref name="maxShardBytes"/>). The folder is built
    /// under a temporary name and renamed into place, replacing any previous one, so readers see the old
    /// folder or the complete new one. Files the caller adds (tokenizer) go in through
    /// <paramref name="writeExtraFiles"/>, which receives the temporary folder.
    /// </summary>
    public static void Save(LlamaForCausalLM model, string hfDir, ScalarType dtype, long maxShardBytes = DefaultMaxShardBytes, Action<string>? writeExtraFiles = null) =>
        Save(model.Config, model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).ToList(), hfDir, dtype, maxShardBytes, writeExtraFiles);

    /// <summary>As <see cref="Save(LlamaForCausalLM, string, ScalarType, long, Action{string}?)"/> from named tensors (HF names) on any device.</summary>
    public static void Save(LlamaConfig config, IReadOnlyList<(string Name, Tensor Tensor)> tensors, string hfDir, ScalarType dtype,
        long maxShardBytes = DefaultMaxShardBytes, Action<string>? writeExtraFiles = null)
    {
        if (maxShardBytes <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes));
        string torchDtype = SafeTensorsDtype.TorchDtypeName(dtype);
        // "out/" and "out" are the same folder; without trimming, the temporary would land inside it.
        string target = Path.TrimEndingDirectorySeparator(Path.GetFullPath(hfDir));
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        string temp = AtomicFile.TempName(target);
        Directory.CreateDirectory(temp);
        try
        {
            AtomicFile.WriteAllText(Path.Combine(temp, "config.json"), config.ToHfJson(torchDtype));
            AtomicFile.WriteAllText(Path.Combine(temp, "generation_config.json"), GenerationConfigJson(config));
            WriteWeights(temp, tensors, dtype, maxShardBytes);
            writeExtraFiles?.Invoke(temp);
            AtomicFile.FsyncDirectory(temp);
            AtomicFile.Commit(temp, target);
        }
        finally
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        }
    }

    static readonly Dictionary<string, string> FormatMetadata = new() { ["format"] = "pt" };

    static void WriteWeights(string dir, IReadOnlyList<(string Name, Tensor Tensor)> tensors, ScalarType dtype, long maxShardBytes)
    {
        // Greedy packing in parameter order; a tensor larger than a shard gets a shard of its own.
        var shards = new List<List<(string Name, Tensor Tensor)>> { new() };
        long current = 0, total = 0;
        foreach (var item in tensors)
        {
            long bytes = SafeTensorsWriter.StoredBytes(item.Tensor, dtype);
            if (current > 0 && current + bytes > maxShardBytes)
            {
                shards.Add([]);
                current = 0;
            }
            shards[^1].Add(item);
            current += bytes;
            total += bytes;
        }

        if (shards.Count == 1)
        {
            SafeTensorsWriter.Write(Path.Combine(dir, SafeTensorsCheckpoint.SingleFileName), shards[0], FormatMetadata, dtype);
            return;
        }
        var weightMap = new JsonObject();
        for (int i = 0; i < shards.Count; i++)
        {
            string file = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            SafeTensorsWriter.Write(Path.Combine(dir, file), shards[i], FormatMetadata, dtype);
            foreach (var (name, _) in shards[i]) weightMap[name] = file;
        }
        var index = new JsonObject
        {
            ["metadata"] = new JsonObject { ["total_size"] = total },
            ["weight_map"] = weightMap,
        };
        AtomicFile.WriteAllText(Path.Combine(dir, SafeTensorsCheckpoint.IndexFileName), index.ToJsonString(Indented) + "\n");
    }

    static string GenerationConfigJson(LlamaConfig config) =>
        new JsonObject
        {
            ["_from_model_config"] = true,
            ["bos_token_id"] = config.BosTokenId,
            ["eos_token_id"] = config.EosTokenId,
        }.ToJsonString(Indented) + "\n";

    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };
}

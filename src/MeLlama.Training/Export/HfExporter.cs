using System.Text.Json;
using MeLlama.Core.IO;
using MeLlama.Model;
using MeLlama.Tokenization;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using static TorchSharp.torch;

namespace MeLlama.Training.Export;

/// <summary>
/// Turns a training checkpoint into a Hugging Face model folder (config.json, generation_config.json, safetensors
/// with index when sharded, tokenizer files) that MeLlama's score/instruction-tuning commands and transformers/vLLM
/// load. Single-process and sharded (FSDP, any world size) checkpoints are both accepted. The checkpoint is verified
/// first; the folder is written under a temporary name and renamed into place.
/// </summary>
public static class HfExporter
{
    /// <param name="checkpointDir">A checkpoint folder (…/checkpoints/step-N) or a run folder (its newest good checkpoint).</param>
    /// <param name="tokenizerSpec">Override of the tokenizer to ship; default: the run's model.tokenizer, else init_from's.</param>
    public static string Export(string checkpointDir, string outDir, ScalarType dtype, string? tokenizerSpec = null, Serilog.ILogger? log = null)
    {
        log ??= Serilog.Core.Logger.None;
        string dir = ResolveCheckpoint(checkpointDir, log);
        var check = CheckpointStore.Check(dir, full: true);
        if (!check.Ok) throw new InvalidDataException($"checkpoint {dir} is not usable: {check.Problem}");
        var config = LlamaConfig.FromHfJson(Path.Combine(dir, CheckpointFiles.ModelConfig));
        var train = ConfigLoader.Parse(File.ReadAllText(Path.Combine(dir, CheckpointFiles.Config)), Path.Combine(dir, CheckpointFiles.Config));
        var tokenizer = LoadTokenizer(tokenizerSpec, train);
        if (tokenizer != null && tokenizer.VocabSize > config.VocabSize)
            throw new InvalidDataException($"tokenizer {tokenizer.Name} has {tokenizer.VocabSize} ids but the model only {config.VocabSize}");

        using var scope = NewDisposeScope();
        var tensors = ReadWeights(dir);
        var exportInfo = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["checkpoint"] = Path.GetFullPath(dir), ["step"] = check.Step, ["dtype"] = dtype.ToString(), ["tokenizer"] = tokenizer?.Name ?? "(none)",
        });
        HfCheckpoint.Save(config, tensors, outDir, dtype, writeExtraFiles: tmp =>
        {
            tokenizer?.SaveHfFiles(tmp);
            AtomicFile.WriteAllText(Path.Combine(tmp, "mellama_export.json"), exportInfo);
        });
        string full = Path.GetFullPath(outDir);
        if (tokenizer == null) log.Warning("No tokenizer known for this run: {Out} has no tokenizer files (pass --tokenizer)", full);
        log.Information("Exported {Checkpoint} (step {Step}) to {Out} as {Dtype}", dir, check.Step, full, dtype);
        return full;
    }

    /// <summary>
    /// fp32 weights with HF names from a checkpoint folder: <c>model.safetensors</c> (single-process engine), or the
    /// per-rank slices of a sharded (FSDP) checkpoint consolidated one unit at a time (<see cref="ShardedCheckpoint"/>).
    /// </summary>
    public static List<(string Name, Tensor Tensor)> ReadWeights(string dir)
    {
        if (ShardedCheckpoint.IsSharded(dir)) return ShardedCheckpoint.ReadConsolidated(dir);
        var tensors = new List<(string Name, Tensor Tensor)>();
        using var reader = SafeTensorsReader.Open(Path.Combine(dir, CheckpointFiles.Model));
        foreach (var entry in reader.Header.EntriesInFileOrder) tensors.Add((entry.Name, reader.ReadTensor(entry.Name, ScalarType.Float32)));
        return tensors;
    }

    /// <summary>A checkpoint folder as given, or a run folder's newest good checkpoint.</summary>
    public static string ResolveCheckpoint(string path, Serilog.ILogger log)
    {
        if (File.Exists(Path.Combine(path, CheckpointStore.ManifestName)) || File.Exists(Path.Combine(path, CheckpointFiles.TrainerState))) return path;
        var store = new CheckpointStore(path, log);
        if (Directory.Exists(store.Root))
            return store.FindLatestGood(out _)?.Dir ?? throw new InvalidDataException($"{path} has no complete checkpoint");
        throw new DirectoryNotFoundException($"{path} is neither a checkpoint folder nor a run folder with checkpoints");
    }

    static ITextTokenizer? LoadTokenizer(string? spec, TrainConfig train)
    {
        if (spec != null) return TokenizerLoader.Load(spec);
        if (train.Model.Tokenizer is { } s) return TokenizerLoader.Load(s);
        if (train.Model.InitFrom is { } hf && Directory.Exists(hf)) return TokenizerLoader.TryLoadFromModelFolder(hf);
        return null;
    }
}

using MeLlama.Core.IO;
using MeLlama.Model;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Engine;

namespace MeLlama.Training.Optim;

/// <summary>
/// The on-disk form of a <see cref="MasterAdamW"/>: fp32 master weights under their HF names in
/// <see cref="CheckpointFiles.Model"/> (so a checkpoint's weights load like any HF shard) and the moments in
/// <see cref="CheckpointFiles.Optimizer"/>. Shared by every single-process engine (pretraining and fine-tuning).
/// </summary>
public static class OptimizerCheckpoint
{
    public static void SaveTo(this MasterAdamW optimizer, string checkpointDir)
    {
        // The writer copies one tensor at a time to the host, so GPU state never needs a second full copy.
        SafeTensorsWriter.Write(Path.Combine(checkpointDir, CheckpointFiles.Model), optimizer.MasterWeights(), new Dictionary<string, string> { ["format"] = "pt" });
        SafeTensorsWriter.Write(Path.Combine(checkpointDir, CheckpointFiles.Optimizer), optimizer.StateTensors());
    }

    /// <summary>The files <see cref="LoadFrom"/> checks against the folder's manifest while reading them.</summary>
    public static readonly IReadOnlySet<string> FilesVerifiedWhileLoading = new HashSet<string>(StringComparer.Ordinal) { CheckpointFiles.Model, CheckpointFiles.Optimizer };

    /// <summary>
    /// Restores master weights, model weights and moments from <paramref name="checkpointDir"/>. When the folder has
    /// a manifest (every checkpoint a <see cref="CheckpointStore"/> wrote), each file's checksum is computed from the
    /// bytes as they are read and compared with it: a resume then reads each byte once instead of hashing the files
    /// first and reading them again. On a mismatch this throws <see cref="CheckpointCorruptException"/> and the
    /// optimizer (and model) hold partly loaded state that the caller must replace, e.g. by loading an older checkpoint.
    /// </summary>
    public static void LoadFrom(this MasterAdamW optimizer, string checkpointDir, long optimizerSteps)
    {
        string modelPath = Path.Combine(checkpointDir, CheckpointFiles.Model), statePath = Path.Combine(checkpointDir, CheckpointFiles.Optimizer);
        var expected = CheckpointStore.ManifestFiles(checkpointDir);
        if (expected is null)
        {
            // Not a store checkpoint (e.g. files written straight by SaveTo): nothing to check against.
            // Straight from the files into the master weights and moments (no temporary copies).
            using var model = SafeTensorsReader.Open(modelPath);
            using var state = SafeTensorsReader.Open(statePath);
            optimizer.LoadState((name, into) => model.ReadInto(name, into), (name, into) => state.ReadInto(name, into), optimizerSteps);
            return;
        }
        VerifiedLoad.Run(checkpointDir, expected,
        [
            new VerifiedFile(CheckpointFiles.Model, optimizer.MasterWeights().ToDictionary(t => t.Name, t => t.Tensor)),
            new VerifiedFile(CheckpointFiles.Optimizer, optimizer.StateTensors().ToDictionary(t => t.Name, t => t.Tensor)),
        ]);
        optimizer.CompleteInPlaceLoad(optimizerSteps);
    }
}

using MeLlama.Model;
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

    public static void LoadFrom(this MasterAdamW optimizer, string checkpointDir, long optimizerSteps)
    {
        using var model = SafeTensorsReader.Open(Path.Combine(checkpointDir, CheckpointFiles.Model));
        using var state = SafeTensorsReader.Open(Path.Combine(checkpointDir, CheckpointFiles.Optimizer));
        // Straight from the files into the master weights and moments (no temporary copies).
        optimizer.LoadState((name, into) => model.ReadInto(name, into), (name, into) => state.ReadInto(name, into), optimizerSteps);
    }
}

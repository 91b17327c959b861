using MeLlama.Model;
using MeLlama.Training.Engine;
using TorchSharp;

namespace MeLlama.Training.Checkpointing;

/// <summary>
/// torch's CPU generator state in a checkpoint (<see cref="CheckpointFiles.Rng"/>), so whatever still draws from it after
/// a resume draws what the uninterrupted run would have. (The CUDA generator has no TorchSharp API to save it.)
/// </summary>
public static class RngCheckpoint
{
    public static void Save(string checkpointDir)
    {
        using var cpuState = torch.random.get_rng_state();
        SafeTensorsWriter.Write(Path.Combine(checkpointDir, CheckpointFiles.Rng), [("torch.cpu", cpuState)]);
    }

    public static void Restore(string checkpointDir)
    {
        using var reader = SafeTensorsReader.Open(Path.Combine(checkpointDir, CheckpointFiles.Rng));
        using var cpuState = reader.ReadTensor("torch.cpu");
        torch.random.set_rng_state(cpuState);
    }
}

namespace MeLlama.Distributed.Nccl;

/// <summary>
/// How the NCCL backend binds its GPU and learns that enqueued work finished, without blocking forever:
/// TorchSharp has no CUDA streams or events, and torch.cuda.synchronize() cannot time out.
/// </summary>
public interface IDeviceSync : IDisposable
{
    /// <summary>Makes the device current on the calling thread (NCCL and the default stream follow it).</summary>
    void MakeCurrent();

    /// <summary>Marks the current end of the default stream.</summary>
    void Record();

    /// <summary>True once everything before the last <see cref="Record"/> has finished on the device.</summary>
    bool IsComplete();
}

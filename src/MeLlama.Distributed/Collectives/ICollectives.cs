using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Distributed;

/// <summary>Element-wise reduction applied across ranks.</summary>
public enum ReduceOp
{
    Sum,
    /// <summary>Sum divided by the world size (integer division for integer tensors).</summary>
    Avg,
    Max,
    Min,
}

/// <summary>
/// Collective communication among the ranks of one job, like torch.distributed's process group:
/// every rank calls the same operations in the same order with tensors of the same dtype and size.
/// <para>Tensors must be contiguous (views such as <c>flat.narrow(0, offset, n)</c> of a contiguous 1-D
/// buffer are fine: that is how a shard of a flat parameter buffer is passed). The TCP backend takes
/// CPU tensors; the NCCL backend CUDA tensors on its device.</para>
/// <para>Every call is bounded by <see cref="Timeout"/> (or the per-call <c>timeout</c>). When a peer dies,
/// stops answering, or calls a different operation, every rank's call throws
/// <see cref="CollectiveException"/> naming the rank at fault, and the communicator is unusable afterwards
/// (the job should exit non-zero and be restarted from its last checkpoint).</para>
/// <para>Calls are synchronous: when one returns, the result is in the output tensor (for NCCL: the
/// operation has completed on the GPU's default stream). One thread at a time.</para>
/// </summary>
public interface ICollectives : IDisposable
{
    int Rank { get; }
    int WorldSize { get; }

    /// <summary>"single", "tcp" or "nccl".</summary>
    string Backend { get; }

    /// <summary>Default bound on each call.</summary>
    TimeSpan Timeout { get; }

    /// <summary>In place: afterwards every rank's <paramref name="tensor"/> holds the reduction over all ranks.</summary>
    void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null);

    /// <summary>
    /// <paramref name="input"/> has <c>WorldSize × n</c> elements, <paramref name="output"/> n. Rank r's output
    /// becomes the reduction over ranks of <c>input[r·n, (r+1)·n)</c>. The input is not modified.
    /// </summary>
    void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null);

    /// <summary>
    /// <paramref name="input"/> has n elements, <paramref name="output"/> <c>WorldSize × n</c>; afterwards
    /// <c>output[r·n, (r+1)·n)</c> holds rank r's input on every rank. The input may be this rank's slice of the output.
    /// </summary>
    void AllGather(Tensor input, Tensor output, TimeSpan? timeout = null);

    /// <summary>Afterwards every rank's <paramref name="tensor"/> equals rank <paramref name="root"/>'s.</summary>
    void Broadcast(Tensor tensor, int root = 0, TimeSpan? timeout = null);

    /// <summary>Returns once every rank has entered the barrier.</summary>
    void Barrier(TimeSpan? timeout = null);

    /// <summary>
    /// Marks the job failed for every rank, e.g. when this rank hits an error outside collectives and is about
    /// to exit: the others' current and next collectives fail promptly with <paramref name="reason"/>
    /// instead of waiting for a timeout.
    /// </summary>
    void Abort(string reason);
}

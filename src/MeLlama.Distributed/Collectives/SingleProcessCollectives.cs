using static TorchSharp.torch;

namespace MeLlama.Distributed;

/// <summary>
/// World size 1: the normal, non-distributed path. Every operation is the identity (the reduction of one
/// contribution), with the same argument checks as the real backends so code that runs here runs sharded.
/// </summary>
public sealed class SingleProcessCollectives(TimeSpan? timeout = null) : ICollectives
{
    public int Rank => 0;
    public int WorldSize => 1;
    public string Backend => "single";
    public TimeSpan Timeout { get; } = timeout ?? TimeSpan.FromMinutes(10);

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null) =>
        CollectiveArgs.CheckReducible(tensor, nameof(tensor), device: null);

    public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum, TimeSpan? timeout = null)
    {
        CollectiveArgs.CheckReduceScatter(input, output, 1, device: null);
        if (TensorMemory.DataPointer(input) != TensorMemory.DataPointer(output)) output.view(-1).copy_(input.view(-1));
    }

    public void AllGather(Tensor input, Tensor output, TimeSpan? timeout = null)
    {
        CollectiveArgs.CheckAllGather(input, output, 1, device: null);
        if (TensorMemory.DataPointer(input) != TensorMemory.DataPointer(output)) output.view(-1).copy_(input.view(-1));
    }

    public void Broadcast(Tensor tensor, int root = 0, TimeSpan? timeout = null)
    {
        CollectiveArgs.CheckTensor(tensor, nameof(tensor), device: null);
        CollectiveArgs.CheckRoot(root, 1);
    }

    public void Barrier(TimeSpan? timeout = null) { }

    public void Abort(string reason) { }

    public void Dispose() { }
}

using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Distributed;

/// <summary>Argument checks shared by the backends, so that misuse fails the same way (and before any rank sends a byte).</summary>
static class CollectiveArgs
{
    public static void CheckTensor(Tensor tensor, string name, DeviceType? device)
    {
        ArgumentNullException.ThrowIfNull(tensor, name);
        if (!tensor.is_contiguous()) throw new ArgumentException($"{name} must be contiguous (a flat buffer or a narrow() slice of one)", name);
        if (device is { } d && tensor.device_type != d)
            throw new ArgumentException(d == DeviceType.CPU
                ? $"{name} is on {tensor.device}; the TCP backend works on CPU tensors (the NCCL backend takes CUDA tensors)"
                : $"{name} is on {tensor.device}; the NCCL backend works on CUDA tensors", name);
    }

    public static void CheckReducible(Tensor tensor, string name, DeviceType? device)
    {
        CheckTensor(tensor, name, device);
        if (!Reduction.SupportsReduction(tensor.dtype))
            throw new ArgumentException($"{name} has dtype {tensor.dtype}; reductions support float32, bfloat16, float16, float64, int32 and int64", name);
    }

    public static void CheckReduceScatter(Tensor input, Tensor output, int worldSize, DeviceType? device)
    {
        CheckReducible(input, nameof(input), device);
        CheckReducible(output, nameof(output), device);
        CheckSameDType(input, output);
        if (input.NumberOfElements != worldSize * output.NumberOfElements)
            throw new ArgumentException($"reduce_scatter needs input of world size × output elements: input has {input.NumberOfElements}, output {output.NumberOfElements}, world size {worldSize} (pad the flat buffer with ShardLayout)");
    }

    public static void CheckAllGather(Tensor input, Tensor output, int worldSize, DeviceType? device)
    {
        CheckTensor(input, nameof(input), device);
        CheckTensor(output, nameof(output), device);
        CheckSameDType(input, output);
        if (output.NumberOfElements != worldSize * input.NumberOfElements)
            throw new ArgumentException($"all_gather needs output of world size × input elements: input has {input.NumberOfElements}, output {output.NumberOfElements}, world size {worldSize}");
    }

    public static void CheckRoot(int root, int worldSize)
    {
        if (root < 0 || root >= worldSize) throw new ArgumentOutOfRangeException(nameof(root), $"root {root} is not a rank in [0, {worldSize})");
    }

    static void CheckSameDType(Tensor input, Tensor output)
    {
        if (input.dtype != output.dtype) throw new ArgumentException($"input is {input.dtype} but output is {output.dtype}");
        if (input.device_type != output.device_type || input.device_index != output.device_index)
            throw new ArgumentException($"input is on {input.device} but output is on {output.device}");
    }

    /// <summary>
    /// The small buffer (one rank's slice) may live inside the big one only as this rank's own slice, the
    /// in-place form FSDP uses (all-gather from the local shard of the flat buffer); any other overlap
    /// would be overwritten mid-operation.
    /// </summary>
    public static void CheckOwnSliceOrDisjoint(IntPtr big, long bigBytes, IntPtr small, long smallBytes, int rank, string what)
    {
        if (bigBytes == 0 || smallBytes == 0) return;
        long b = big, s = small;
        bool overlaps = s < b + bigBytes && b < s + smallBytes;
        if (overlaps && s != b + rank * smallBytes)
            throw new ArgumentException($"{what} overlaps the other buffer but is not this rank's slice of it");
    }
}

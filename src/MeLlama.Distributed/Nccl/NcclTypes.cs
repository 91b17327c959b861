using System.Runtime.InteropServices;
using TorchSharp;

namespace MeLlama.Distributed.Nccl;

/// <summary><c>ncclResult_t</c> (nccl.h). Values are the library's ABI and never change.</summary>
public enum NcclResult
{
    Success = 0,
    UnhandledCudaError = 1,
    SystemError = 2,
    InternalError = 3,
    InvalidArgument = 4,
    InvalidUsage = 5,
    RemoteError = 6,
    InProgress = 7,
}

/// <summary><c>ncclDataType_t</c> (nccl.h).</summary>
public enum NcclDataType
{
    Int8 = 0,
    Uint8 = 1,
    Int32 = 2,
    Uint32 = 3,
    Int64 = 4,
    Uint64 = 5,
    Float16 = 6,
    Float32 = 7,
    Float64 = 8,
    Bfloat16 = 9,
}

/// <summary><c>ncclRedOp_t</c> (nccl.h). <see cref="Avg"/> needs NCCL 2.10 or later.</summary>
public enum NcclRedOp
{
    Sum = 0,
    Prod = 1,
    Max = 2,
    Min = 3,
    Avg = 4,
}

/// <summary>
/// <c>ncclUniqueId</c>: 128 opaque bytes (NCCL_UNIQUE_ID_BYTES) that rank 0 creates and every rank passes,
/// by value, to <c>ncclCommInitRank</c>. Blittable, so it crosses P/Invoke as the C struct does.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = Bytes)]
public unsafe struct NcclUniqueId
{
    public const int Bytes = 128;

    fixed byte data[Bytes];

    public readonly byte[] ToArray()
    {
        var result = new byte[Bytes];
        fixed (byte* p = data) new ReadOnlySpan<byte>(p, Bytes).CopyTo(result);
        return result;
    }

    public static NcclUniqueId FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Bytes) throw new ArgumentException($"an NCCL unique id has {Bytes} bytes, not {bytes.Length}");
        var id = new NcclUniqueId();
        bytes.CopyTo(new Span<byte>(id.data, Bytes));
        return id;
    }
}

/// <summary>Translations from TorchSharp/MeLlama types to NCCL's.</summary>
public static class NcclMapping
{
    public static NcclDataType DataType(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Float32 => NcclDataType.Float32,
        torch.ScalarType.Float64 => NcclDataType.Float64,
        torch.ScalarType.BFloat16 => NcclDataType.Bfloat16,
        torch.ScalarType.Float16 => NcclDataType.Float16,
        torch.ScalarType.Int64 => NcclDataType.Int64,
        torch.ScalarType.Int32 => NcclDataType.Int32,
        torch.ScalarType.Int8 => NcclDataType.Int8,
        torch.ScalarType.Byte or torch.ScalarType.Bool => NcclDataType.Uint8,
        _ => throw new NotSupportedException($"NCCL cannot communicate {dtype} tensors"),
    };

    public static NcclRedOp RedOp(ReduceOp op) => op switch
    {
        ReduceOp.Sum => NcclRedOp.Sum,
        ReduceOp.Avg => NcclRedOp.Avg,
        ReduceOp.Max => NcclRedOp.Max,
        ReduceOp.Min => NcclRedOp.Min,
        _ => throw new ArgumentOutOfRangeException(nameof(op)),
    };

    /// <summary>NCCL_VERSION_CODE: major*10000 + minor*100 + patch since 2.9, major*1000 + minor*100 + patch before.</summary>
    public static Version DecodeVersion(int code) => code >= 10000
        ? new Version(code / 10000, code % 10000 / 100, code % 100)
        : new Version(code / 1000, code % 1000 / 100, code % 100);

    /// <summary>ncclAvg arrived in NCCL 2.10.</summary>
    public static bool SupportsAvg(Version version) => version >= new Version(2, 10);
}

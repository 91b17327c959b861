using System.Buffers.Binary;
using TorchSharp;

namespace MeLlama.Distributed.Tcp;

enum OpKind : byte { AllReduce = 1, ReduceScatter = 2, AllGather = 3, Broadcast = 4, Barrier = 5 }

/// <summary>
/// Sent to the ring successor before each collective so that ranks calling different operations (or
/// sizes) fail with a message saying so, instead of exchanging mismatched bytes or hanging.
/// </summary>
readonly record struct OpHeader(long Sequence, OpKind Kind, torch.ScalarType DType, ReduceOp Op, long Numel, int Root)
{
    public const int Size = 32;
    const uint Magic = 0x314C434D; // "MCL1"

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(b, Magic);
        b[4] = (byte)Kind;
        b[5] = (byte)DType;
        b[6] = (byte)Op;
        b[7] = 0;
        BinaryPrimitives.WriteInt64LittleEndian(b[8..], Sequence);
        BinaryPrimitives.WriteInt64LittleEndian(b[16..], Numel);
        BinaryPrimitives.WriteInt32LittleEndian(b[24..], Root);
        BinaryPrimitives.WriteInt32LittleEndian(b[28..], 0);
    }

    public static OpHeader Read(ReadOnlySpan<byte> b)
    {
        if (BinaryPrimitives.ReadUInt32LittleEndian(b) != Magic) throw new InvalidDataException("ring stream is out of step (bad header magic)");
        return new OpHeader(BinaryPrimitives.ReadInt64LittleEndian(b[8..]), (OpKind)b[4], (torch.ScalarType)b[5], (ReduceOp)b[6],
            BinaryPrimitives.ReadInt64LittleEndian(b[16..]), BinaryPrimitives.ReadInt32LittleEndian(b[24..]));
    }

    public string Describe() => Kind switch
    {
        OpKind.Barrier => $"barrier (op #{Sequence})",
        OpKind.Broadcast => $"broadcast from rank {Root} of {Numel} {DType} elements (op #{Sequence})",
        OpKind.AllGather => $"all_gather of {Numel} {DType} elements (op #{Sequence})",
        _ => $"{(Kind == OpKind.AllReduce ? "all_reduce" : "reduce_scatter")} {Op.ToString().ToLowerInvariant()} of {Numel} {DType} elements (op #{Sequence})",
    };
}

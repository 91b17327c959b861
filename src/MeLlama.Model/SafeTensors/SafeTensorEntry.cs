using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>One tensor in a safetensors file: dtype, shape and byte range within the data section.</summary>
public sealed record SafeTensorEntry(string Name, string DtypeName, ScalarType Dtype, long[] Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public int ElementSize => SafeTensorsDtype.SizeOf(Dtype);
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

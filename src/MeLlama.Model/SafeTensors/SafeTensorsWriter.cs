using System.Text.Json.Nodes;
using MeLlama.Core.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// Writes safetensors files: 8-byte little-endian header length, JSON header padded with spaces to a
/// multiple of 8 (so tensor data is 8-byte aligned), then the tensors back to back in the given order.
/// Tensors are streamed one at a time (each copied to CPU, and converted, on its own), and the file is
/// written atomically (temporary name, fsync, rename).
/// </summary>
public static class SafeTensorsWriter
{
    /// <param name="path">Destination file.</param>
    /// <param name="tensors">Name and tensor, any device; names must be unique.</param>
    /// <param name="metadata">String pairs for <c>__metadata__</c> (HF writes {"format": "pt"}).</param>
    /// <param name="dtype">Convert floating-point tensors to this dtype as they are written (null: keep each tensor's own).</param>
    public static void Write(string path, IEnumerable<(string Name, Tensor Tensor)> tensors, IDictionary<string, string>? metadata = null, ScalarType? dtype = null)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors data is little-endian");
        var list = tensors.ToList();
        var header = BuildHeader(list, metadata, dtype);
        AtomicFile.Write(path, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            foreach (var (name, tensor) in list) WriteData(stream, tensor, StoredType(tensor, dtype));
        });
    }

    /// <summary>Bytes a tensor occupies when written with <paramref name="dtype"/> conversion.</summary>
    public static long StoredBytes(Tensor tensor, ScalarType? dtype = null) =>
        tensor.numel() * SafeTensorsDtype.SizeOf(StoredType(tensor, dtype));

    static ScalarType StoredType(Tensor tensor, ScalarType? dtype) =>
        dtype is { } target && is_floating_point(tensor.dtype) ? target : tensor.dtype;

    static byte[] BuildHeader(List<(string Name, Tensor Tensor)> tensors, IDictionary<string, string>? metadata, ScalarType? dtype)
    {
        var root = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var meta = new JsonObject();
            foreach (var (key, value) in metadata) meta[key] = value;
            root["__metadata__"] = meta;
        }
        long offset = 0;
        foreach (var (name, tensor) in tensors)
        {
            if (string.IsNullOrEmpty(name) || name == "__metadata__") throw new ArgumentException($"invalid tensor name \"{name}\"");
            if (root.ContainsKey(name)) throw new ArgumentException($"tensor name \"{name}\" given twice");
            var type = StoredType(tensor, dtype);
            long bytes = tensor.numel() * SafeTensorsDtype.SizeOf(type);
            root[name] = new JsonObject
            {
                ["dtype"] = SafeTensorsDtype.NameOf(type),
                ["shape"] = new JsonArray(tensor.shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }
        var json = System.Text.Encoding.UTF8.GetBytes(root.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        var header = new byte[padded];
        json.CopyTo(header, 0);
        header.AsSpan(json.Length).Fill((byte)' ');
        return header;
    }

    static void WriteData(Stream stream, Tensor tensor, ScalarType type)
    {
        if (tensor.numel() == 0) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var flat = tensor.detach().to(type, CPU).contiguous().view(-1);
        long elementSize = SafeTensorsDtype.SizeOf(type);
        long sliceElements = Math.Max(1, (1L << 30) / elementSize);
        for (long start = 0; start < flat.shape[0]; start += sliceElements)
        {
            using var slice = flat.narrow(0, start, Math.Min(sliceElements, flat.shape[0] - start));
            stream.Write(slice.bytes);
        }
    }
}

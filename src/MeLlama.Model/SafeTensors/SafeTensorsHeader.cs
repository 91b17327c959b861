using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;

namespace MeLlama.Model;

/// <summary>
/// The parsed and validated header of a safetensors file. Layout: 8-byte little-endian header length N,
/// N bytes of UTF-8 JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {…}},
/// then the data section, which the offsets (relative to its start) must tile exactly: sorted, no overlap,
/// no gap, ending at the end of the file. Every check runs before any tensor byte is read, so a truncated
/// or hostile file gives an <see cref="InvalidDataException"/> naming the file (and tensor), never a crash
/// or a huge allocation.
/// </summary>
public sealed class SafeTensorsHeader
{
    /// <summary>Headers larger than this are refused (the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    public required IReadOnlyDictionary<string, SafeTensorEntry> Entries { get; init; }
    /// <summary>Entries in file order (by offset).</summary>
    public required IReadOnlyList<SafeTensorEntry> EntriesInFileOrder { get; init; }
    public required IReadOnlyDictionary<string, string> Metadata { get; init; }
    /// <summary>Absolute file offset where the data section starts (8 + header length).</summary>
    public required long DataStart { get; init; }

    public static SafeTensorsHeader Read(SafeFileHandle file, string path)
    {
        long fileLength = RandomAccess.GetLength(file);
        if (fileLength < 8)
            throw Bad(path, $"file is {fileLength} bytes, too short for the 8-byte header length");
        Span<byte> prefix = stackalloc byte[8];
        ReadExactly(file, prefix, 0, path);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > MaxHeaderBytes)
            throw Bad(path, $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit");
        if ((long)headerLength > fileLength - 8)
            throw Bad(path, $"header length {headerLength} runs past the end of the file ({fileLength} bytes)");
        var headerBytes = new byte[headerLength];
        ReadExactly(file, headerBytes, 8, path);
        long dataStart = 8 + (long)headerLength;
        return Parse(headerBytes, fileLength - dataStart, dataStart, path);
    }

    public static SafeTensorsHeader Parse(ReadOnlySpan<byte> json, long dataLength, long dataStart, string path)
    {
        // JsonDocument accepts invalid UTF-8 inside strings and only fails later, when a name is read.
        try { StrictUtf8.GetCharCount(json); }
        catch (DecoderFallbackException) { throw Bad(path, "header is not valid UTF-8"); }
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json.ToArray(), new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw Bad(path, $"header is not valid JSON ({e.Message})", e);
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw Bad(path, "header must be a JSON object");
            var entries = new Dictionary<string, SafeTensorEntry>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (var property in document.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    if (sawMetadata) throw Bad(path, "__metadata__ appears twice");
                    sawMetadata = true;
                    ParseMetadata(property.Value, metadata, path);
                    continue;
                }
                if (entries.ContainsKey(property.Name))
                    throw Bad(path, $"tensor \"{property.Name}\" appears twice in the header");
                entries.Add(property.Name, ParseEntry(property.Name, property.Value, dataLength, path));
            }
            var ordered = CheckTiling(entries.Values, dataLength, path);
            return new SafeTensorsHeader { Entries = entries, EntriesInFileOrder = ordered, Metadata = metadata, DataStart = dataStart };
        }
    }

    static void ParseMetadata(JsonElement value, Dictionary<string, string> metadata, string path)
    {
        if (value.ValueKind != JsonValueKind.Object) throw Bad(path, "__metadata__ must be an object of strings");
        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw Bad(path, $"__metadata__ value \"{item.Name}\" must be a string");
            metadata[item.Name] = item.Value.GetString()!;
        }
    }

    static SafeTensorEntry ParseEntry(string name, JsonElement value, long dataLength, string path)
    {
        if (name.Length == 0) throw Bad(path, "a tensor has an empty name");
        if (value.ValueKind != JsonValueKind.Object) throw Bad(path, name, "entry must be an object");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw Bad(path, name, "missing string field \"dtype\"");
        string dtypeName = dtypeElement.GetString()!;
        if (!SafeTensorsDtype.TryParse(dtypeName, out var dtype, out int elementSize))
            throw Bad(path, name, $"unknown or unsupported dtype \"{dtypeName}\"");

        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw Bad(path, name, "missing array field \"shape\"");
        var shape = new List<long>();
        long elements = 1;
        foreach (var dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out long size) || size < 0)
                throw Bad(path, name, $"shape must hold non-negative integers (got {shapeElement.GetRawText()})");
            shape.Add(size);
            // Overflow-safe: any product beyond the data section is wrong anyway.
            elements = elements == 0 || size == 0 ? 0 : elements > long.MaxValue / size ? long.MaxValue : elements * size;
        }

        if (!value.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array || offsets.GetArrayLength() != 2)
            throw Bad(path, name, "data_offsets must be an array [begin, end]");
        if (offsets[0].ValueKind != JsonValueKind.Number || offsets[1].ValueKind != JsonValueKind.Number ||
            !offsets[0].TryGetInt64(out long begin) || !offsets[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw Bad(path, name, $"data_offsets {offsets.GetRawText()} must be integers with 0 ≤ begin ≤ end");
        if (end > dataLength)
            throw Bad(path, name, $"data_offsets [{begin}, {end}] run past the data section ({dataLength} bytes; file truncated?)");
        long expectedBytes = elements > long.MaxValue / elementSize ? long.MaxValue : elements * elementSize;
        if (expectedBytes != end - begin)
            throw Bad(path, name, $"shape [{string.Join(", ", shape)}] × {dtypeName} needs {expectedBytes} bytes but data_offsets span {end - begin}");
        return new SafeTensorEntry(name, dtypeName, dtype, [.. shape], begin, end);
    }

    static IReadOnlyList<SafeTensorEntry> CheckTiling(IEnumerable<SafeTensorEntry> entries, long dataLength, string path)
    {
        var ordered = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
        long cursor = 0;
        SafeTensorEntry? previous = null;
        foreach (var entry in ordered)
        {
            if (entry.Begin < cursor)
                throw Bad(path, entry.Name, $"data_offsets [{entry.Begin}, {entry.End}] overlap tensor \"{previous!.Name}\" [{previous.Begin}, {previous.End}]");
            if (entry.Begin > cursor)
                throw Bad(path, entry.Name, $"gap in the data section: bytes [{cursor}, {entry.Begin}) belong to no tensor");
            cursor = entry.End;
            previous = entry;
        }
        if (cursor != dataLength)
            throw Bad(path, $"tensors cover {cursor} bytes but the data section holds {dataLength} (trailing bytes)");
        return ordered;
    }

    internal static void ReadExactly(SafeFileHandle file, Span<byte> buffer, long offset, string path)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = RandomAccess.Read(file, buffer[done..], offset + done);
            if (n <= 0) throw Bad(path, $"unexpected end of file at byte {offset + done} (truncated?)");
            done += n;
        }
    }

    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    static InvalidDataException Bad(string path, string message, Exception? inner = null) =>
        new($"safetensors file {path}: {message}", inner);

    static InvalidDataException Bad(string path, string tensor, string message) =>
        new($"safetensors file {path}, tensor \"{tensor}\": {message}");
}

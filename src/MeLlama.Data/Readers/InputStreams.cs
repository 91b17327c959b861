using System.Buffers.Binary;
using System.IO.Compression;
using System.Security.Cryptography;

namespace MeLlama.Data.Readers;

/// <summary>
/// Opens an input file as a stream of decompressed bytes (.gz and .zst by extension), hashing the raw file bytes
/// on the way (sha256 for the manifest without a second read) and counting them (progress).
/// </summary>
public sealed class InputStreams : IDisposable
{
    readonly HashingStream _raw;
    public Stream Content { get; }
    public string Path { get; }

    InputStreams(string path, HashingStream raw, Stream content)
    {
        Path = path;
        _raw = raw;
        Content = content;
    }

    public static InputStreams Open(string path)
    {
        FileStream fs;
        try { fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InputFileException(Problems.UnreadableFile, 0, $"cannot open: {e.GetType().Name}", e);
        }
        var raw = new HashingStream(fs);
        Stream content = Compression(path) switch
        {
            "gz" => new GzipCheckedStream(raw, ReadGzipTrailer(fs)),
            "zst" => new DecompressionGuardStream(new ZstdSharp.DecompressionStream(raw, leaveOpen: true)),
            _ => raw,
        };
        return new InputStreams(path, raw, content);
    }

    public static string? Compression(string path) =>
        path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? "gz"
        : path.EndsWith(".zst", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".zstd", StringComparison.OrdinalIgnoreCase) ? "zst"
        : null;

    /// <summary>Name without the compression extension (to pick the reader by "x.jsonl.gz" → "x.jsonl").</summary>
    public static string WithoutCompression(string path) => Compression(path) is null ? path : System.IO.Path.ChangeExtension(path, null);

    /// <summary>Raw bytes read so far.</summary>
    public long RawBytesRead => _raw.BytesRead;

    /// <summary>Reads the rest of the raw file (if the reader stopped early) and returns its size and sha256.</summary>
    public (long Bytes, string Sha256) Finish()
    {
        var buf = new byte[1 << 16];
        while (_raw.Read(buf, 0, buf.Length) > 0) { }
        return (_raw.BytesRead, _raw.HashHex());
    }

    static (uint Crc, uint Size)? ReadGzipTrailer(FileStream fs)
    {
        if (fs.Length < 18) return null;
        long pos = fs.Position;
        Span<byte> t = stackalloc byte[8];
        fs.Seek(-8, SeekOrigin.End);
        fs.ReadExactly(t);
        fs.Seek(pos, SeekOrigin.Begin);
        return (BinaryPrimitives.ReadUInt32LittleEndian(t), BinaryPrimitives.ReadUInt32LittleEndian(t[4..]));
    }

    public void Dispose()
    {
        Content.Dispose();
        _raw.Dispose();
    }
}

/// <summary>Pass-through read stream that hashes and counts what goes through it.</summary>
sealed class HashingStream(Stream inner) : Stream
{
    readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    public long BytesRead { get; private set; }
    public string HashHex() => Convert.ToHexStringLower(_hash.GetCurrentHash());

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    public override int Read(Span<byte> buffer)
    {
        int n = inner.Read(buffer);
        _hash.AppendData(buffer[..n]);
        BytesRead += n;
        return n;
    }
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => inner.Length;
    public override long Position { get => BytesRead; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    protected override void Dispose(bool disposing)
    {
        if (disposing) { inner.Dispose(); _hash.Dispose(); }
        base.Dispose(disposing);
    }
}

/// <summary>Turns any failure of a decompressor into an <see cref="InputFileException"/> (corrupt_compressed_input).</summary>
class DecompressionGuardStream(Stream inner) : Stream
{
    protected long Produced;
    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    public override int Read(Span<byte> buffer)
    {
        int n;
        try { n = inner.Read(buffer); }
        catch (Exception e) when (e is not InputFileException && e is IOException or InvalidDataException or InvalidOperationException or ZstdSharp.ZstdException)
        {
            throw new InputFileException(Problems.CorruptCompression, 0, $"truncated or corrupt compressed data after {Produced} decompressed bytes ({e.GetType().Name})", e);
        }
        if (n > 0) OnData(buffer[..n]);
        else if (buffer.Length > 0) OnEnd();
        Produced += n;
        return n;
    }
    protected virtual void OnData(ReadOnlySpan<byte> data) { }
    protected virtual void OnEnd() { }
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => Produced; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    protected override void Dispose(bool disposing)
    {
        if (disposing) inner.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>
/// .NET's GZipStream returns a silent early EOF on a truncated file. This wrapper checks, at EOF, the CRC-32 and
/// length of everything decompressed against the gzip trailer (last 8 bytes of the file). Limitation: a
/// multi-member gzip (e.g. bgzip) only carries its last member's trailer there and is reported as corrupt.
/// </summary>
sealed class GzipCheckedStream(Stream raw, (uint Crc, uint Size)? trailer)
    : DecompressionGuardStream(new GZipStream(raw, CompressionMode.Decompress, leaveOpen: true))
{
    uint _crc = 0xFFFFFFFFu;
    bool _checked;

    protected override void OnData(ReadOnlySpan<byte> data) => _crc = Crc32.Update(_crc, data);

    protected override void OnEnd()
    {
        if (_checked) return;
        _checked = true;
        uint crc = ~_crc, size = unchecked((uint)Produced);
        if (trailer is not { } t || t.Crc != crc || t.Size != size)
            throw new InputFileException(Problems.CorruptCompression, 0, $"gzip data is truncated or corrupt: trailer does not match the {Produced} decompressed bytes");
    }
}

static class Crc32
{
    static readonly uint[] Table = Build();

    static uint[] Build()
    {
        var t = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }

    public static uint Update(uint crc, ReadOnlySpan<byte> data)
    {
        var table = Table;
        foreach (byte b in data) crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return crc;
    }
}

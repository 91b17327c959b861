using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;

namespace MeLlama.Data.Shards;

/// <summary>Raised when a shard is missing, truncated, corrupt or does not match its manifest.</summary>
public sealed class ShardCorruptException(string path, string reason)
    : IOException($"corrupt or unreadable shard '{path}': {reason}")
{
    public string ShardPath { get; } = path;
}

/// <summary>
/// Memory-mapped read access to one Megatron shard. Opening checks the index header, the index size and that
/// the .bin size equals the end of the last sequence (O(1), no full read); content checksums are
/// <see cref="Datasets.PreparedDataset"/>'s job.
/// </summary>
public sealed unsafe class IndexedShardReader : IDisposable
{
    readonly MemoryMappedFile? _idxMap, _binMap;
    readonly MemoryMappedViewAccessor? _idxView, _binView;
    readonly byte* _idx, _bin;
    readonly long _lengthsOffset, _pointersOffset, _docsOffset;

    public string BinPath { get; }
    public string IdxPath { get; }
    public TokenDType DType { get; }
    public int TokenSize { get; }
    public long SequenceCount { get; }
    /// <summary>Number of documents (the index stores this + 1 document indices).</summary>
    public long DocumentCount { get; }
    public long TokenCount { get; }

    IndexedShardReader(string binPath)
    {
        BinPath = Path.GetFullPath(binPath);
        IdxPath = IndexedFormat.IdxPath(BinPath);
        if (!File.Exists(IdxPath)) throw new ShardCorruptException(IdxPath, "index file is missing");
        if (!File.Exists(BinPath)) throw new ShardCorruptException(BinPath, "data file is missing");
        long idxSize = new FileInfo(IdxPath).Length, binSize = new FileInfo(BinPath).Length;
        if (idxSize < IndexedFormat.HeaderBytes) throw new ShardCorruptException(IdxPath, $"index is {idxSize} bytes, shorter than its {IndexedFormat.HeaderBytes}-byte header");

        _idxMap = MemoryMappedFile.CreateFromFile(IdxPath, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _idxView = _idxMap.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* p = null;
        _idxView.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _idx = p + _idxView.PointerOffset;
        try
        {
            var header = new ReadOnlySpan<byte>(_idx, IndexedFormat.HeaderBytes);
            if (!header[..9].SequenceEqual(IndexedFormat.Magic)) throw new ShardCorruptException(IdxPath, "bad magic (not a Megatron MMIDIDX index)");
            ulong version = BinaryPrimitives.ReadUInt64LittleEndian(header[9..]);
            if (version != IndexedFormat.Version) throw new ShardCorruptException(IdxPath, $"unsupported index version {version}");
            DType = (TokenDType)header[17];
            if (DType is not (TokenDType.UInt16 or TokenDType.Int32 or TokenDType.Int64 or TokenDType.UInt8 or TokenDType.Int16))
                throw new ShardCorruptException(IdxPath, $"dtype code {(byte)DType} is not an integer token type");
            TokenSize = IndexedFormat.Size(DType);
            ulong seq = BinaryPrimitives.ReadUInt64LittleEndian(header[18..]);
            ulong docIdx = BinaryPrimitives.ReadUInt64LittleEndian(header[26..]);
            if (docIdx < 1 || seq > (ulong)idxSize || docIdx > (ulong)idxSize) throw new ShardCorruptException(IdxPath, "impossible sequence/document counts");
            SequenceCount = (long)seq;
            DocumentCount = (long)docIdx - 1;
            long expected = IndexedFormat.HeaderBytes + 12 * SequenceCount + 8 * (DocumentCount + 1);
            if (idxSize != expected) throw new ShardCorruptException(IdxPath, $"index is {idxSize} bytes, expected {expected} for {SequenceCount} sequences");
            _lengthsOffset = IndexedFormat.HeaderBytes;
            _pointersOffset = _lengthsOffset + 4 * SequenceCount;
            _docsOffset = _pointersOffset + 8 * SequenceCount;

            long endBytes = SequenceCount == 0 ? 0 : SequencePointer(SequenceCount - 1) + (long)SequenceLength(SequenceCount - 1) * TokenSize;
            if (binSize != endBytes) throw new ShardCorruptException(BinPath, $"data file is {binSize} bytes, index says {endBytes}");
            TokenCount = binSize / TokenSize;
            if (binSize > 0)
            {
                _binMap = MemoryMappedFile.CreateFromFile(BinPath, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
                _binView = _binMap.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
                byte* b = null;
                _binView.SafeMemoryMappedViewHandle.AcquirePointer(ref b);
                _bin = b + _binView.PointerOffset;
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Opens <c>X.bin</c> + <c>X.idx</c> (either path or the common prefix may be given).</summary>
    public static IndexedShardReader Open(string path) => new(IndexedFormat.BinPath(path));

    public int SequenceLength(long i) => BinaryPrimitives.ReadInt32LittleEndian(new ReadOnlySpan<byte>(_idx + _lengthsOffset + 4 * i, 4));
    public long SequencePointer(long i) => BinaryPrimitives.ReadInt64LittleEndian(new ReadOnlySpan<byte>(_idx + _pointersOffset + 8 * i, 8));
    public long DocumentIndex(long i) => BinaryPrimitives.ReadInt64LittleEndian(new ReadOnlySpan<byte>(_idx + _docsOffset + 8 * i, 8));

    /// <summary>Copies <paramref name="destination"/>.Length tokens starting at token offset <paramref name="start"/>.</summary>
    public void ReadTokens(long start, Span<long> destination)
    {
        if (start < 0 || start + destination.Length > TokenCount)
            throw new ArgumentOutOfRangeException(nameof(start), $"tokens [{start}, {start + destination.Length}) outside shard of {TokenCount}");
        byte* src = _bin + start * TokenSize;
        switch (DType)
        {
            case TokenDType.UInt16:
                var u16 = new ReadOnlySpan<ushort>(src, destination.Length);
                if (BitConverter.IsLittleEndian) for (int i = 0; i < u16.Length; i++) destination[i] = u16[i];
                else for (int i = 0; i < u16.Length; i++) destination[i] = BinaryPrimitives.ReverseEndianness(u16[i]);
                break;
            case TokenDType.Int32:
                var i32 = new ReadOnlySpan<int>(src, destination.Length);
                if (BitConverter.IsLittleEndian) for (int i = 0; i < i32.Length; i++) destination[i] = i32[i];
                else for (int i = 0; i < i32.Length; i++) destination[i] = BinaryPrimitives.ReverseEndianness(i32[i]);
                break;
            default:
                for (int i = 0; i < destination.Length; i++)
                {
                    var s = new ReadOnlySpan<byte>(src + (long)i * TokenSize, TokenSize);
                    destination[i] = DType switch
                    {
                        TokenDType.UInt8 => s[0],
                        TokenDType.Int16 => BinaryPrimitives.ReadInt16LittleEndian(s),
                        _ => BinaryPrimitives.ReadInt64LittleEndian(s),
                    };
                }
                break;
        }
    }

    /// <summary>The tokens of sequence (document) <paramref name="i"/>.</summary>
    public long[] ReadSequence(long i)
    {
        var result = new long[SequenceLength(i)];
        ReadTokens(SequencePointer(i) / TokenSize, result);
        return result;
    }

    public void Dispose()
    {
        if (_idxView != null) { _idxView.SafeMemoryMappedViewHandle.ReleasePointer(); _idxView.Dispose(); }
        _idxMap?.Dispose();
        if (_binView != null && _bin != null) _binView.SafeMemoryMappedViewHandle.ReleasePointer();
        _binView?.Dispose();
        _binMap?.Dispose();
    }
}

using System.Buffers.Binary;
using System.Security.Cryptography;
using MeLlama.Core.IO;

namespace MeLlama.Data.Shards;

/// <summary>A finished shard: file names (relative to the dataset folder), sizes and checksums.</summary>
public sealed record ShardInfo(
    string Bin, string Idx, long BinBytes, long IdxBytes, string BinSha256, string IdxSha256, long Documents, long Tokens);

/// <summary>
/// Streams documents into one Megatron shard (<c>.bin</c> + <c>.idx</c>). Tokens go straight to disk
/// (only 4 bytes of length per document stay in memory); both files are written under temporary names
/// and renamed into place by <see cref="Complete"/>, so a crash never leaves a half shard under a final name.
/// </summary>
public sealed class IndexedShardWriter : IDisposable
{
    readonly string _binPath, _idxPath, _binTmp;
    readonly UnixFileMode? _mode;
    readonly TokenDType _dtype;
    readonly int _maxTokenId;
    readonly FileStream _bin;
    readonly IncrementalHash _binHash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    readonly List<int> _lengths = [];
    byte[] _scratch = new byte[1 << 16];
    long _tokens;
    bool _done;

    public IndexedShardWriter(string binPath, TokenDType dtype, bool restricted)
    {
        if (dtype is not (TokenDType.UInt16 or TokenDType.Int32))
            throw new ArgumentException("token shards are uint16 or int32", nameof(dtype));
        _binPath = Path.GetFullPath(binPath);
        _idxPath = IndexedFormat.IdxPath(_binPath);
        _dtype = dtype;
        _maxTokenId = dtype == TokenDType.UInt16 ? ushort.MaxValue : int.MaxValue;
        _mode = RestrictedPaths.FileMode(restricted);
        _binTmp = AtomicFile.TempName(_binPath);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, BufferSize = 1 << 20 };
        if (_mode is { } m && !OperatingSystem.IsWindows()) options.UnixCreateMode = m;
        _bin = new FileStream(_binTmp, options);
    }

    public long Documents => _lengths.Count;
    public long Tokens => _tokens;
    public long BinBytes => _tokens * IndexedFormat.Size(_dtype);

    /// <summary>Appends one document (already including its EOS).</summary>
    public void Add(ReadOnlySpan<int> tokens)
    {
        ObjectDisposedException.ThrowIf(_done, this);
        int size = IndexedFormat.Size(_dtype);
        int need = tokens.Length * size;
        if (_scratch.Length < need) _scratch = new byte[Math.Max(need, _scratch.Length * 2)];
        var dst = _scratch.AsSpan(0, need);
        for (int i = 0; i < tokens.Length; i++)
        {
            int t = tokens[i];
            if ((uint)t > (uint)_maxTokenId) throw new ArgumentOutOfRangeException(nameof(tokens), t, $"token id does not fit the shard dtype {_dtype}");
            if (size == 2) BinaryPrimitives.WriteUInt16LittleEndian(dst[(2 * i)..], (ushort)t);
            else BinaryPrimitives.WriteInt32LittleEndian(dst[(4 * i)..], t);
        }
        _bin.Write(dst);
        _binHash.AppendData(dst);
        _lengths.Add(tokens.Length);
        _tokens += tokens.Length;
    }

    /// <summary>Writes the index, flushes both files to disk and moves them to their final names.</summary>
    public ShardInfo Complete()
    {
        ObjectDisposedException.ThrowIf(_done, this);
        _done = true;
        _bin.Flush(flushToDisk: true);
        _bin.Dispose();
        byte[] idx = BuildIndex(_lengths, _dtype);
        string binSha = Convert.ToHexStringLower(_binHash.GetHashAndReset());
        AtomicFile.WriteAllBytes(_idxPath, idx, _mode);
        AtomicFile.Commit(_binTmp, _binPath);
        string dir = Path.GetDirectoryName(_binPath)!;
        return new ShardInfo(
            Path.GetRelativePath(dir, _binPath), Path.GetRelativePath(dir, _idxPath),
            BinBytes, idx.Length, binSha, Convert.ToHexStringLower(SHA256.HashData(idx)), _lengths.Count, _tokens);
    }

    /// <summary>Serialises an index for one-sequence-per-document shards.</summary>
    public static byte[] BuildIndex(IReadOnlyList<int> lengths, TokenDType dtype)
    {
        int n = lengths.Count;
        var idx = new byte[IndexedFormat.HeaderBytes + 4L * n + 8L * n + 8L * (n + 1)];
        var span = idx.AsSpan();
        IndexedFormat.Magic.CopyTo(span);
        int o = IndexedFormat.Magic.Length;
        BinaryPrimitives.WriteUInt64LittleEndian(span[o..], IndexedFormat.Version); o += 8;
        span[o++] = (byte)dtype;
        BinaryPrimitives.WriteUInt64LittleEndian(span[o..], (ulong)n); o += 8;
        BinaryPrimitives.WriteUInt64LittleEndian(span[o..], (ulong)(n + 1)); o += 8;
        for (int i = 0; i < n; i++, o += 4) BinaryPrimitives.WriteInt32LittleEndian(span[o..], lengths[i]);
        long pointer = 0, size = IndexedFormat.Size(dtype);
        for (int i = 0; i < n; i++, o += 8)
        {
            BinaryPrimitives.WriteInt64LittleEndian(span[o..], pointer);
            pointer += lengths[i] * size;
        }
        for (int i = 0; i <= n; i++, o += 8) BinaryPrimitives.WriteInt64LittleEndian(span[o..], i);
        return idx;
    }

    public void Dispose()
    {
        if (_done) return;
        _done = true;
        _bin.Dispose();
        try { File.Delete(_binTmp); } catch (IOException) { }
        _binHash.Dispose();
    }
}

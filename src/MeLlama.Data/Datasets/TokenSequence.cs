using MeLlama.Data.Shards;

namespace MeLlama.Data.Datasets;

/// <summary>
/// The tokens of several shards seen as one long sequence (documents back to back, each ending in EOS), in
/// manifest order. This is what fixed-length samples are cut from; reads may span shard boundaries.
/// </summary>
public sealed class TokenSequence : IDisposable
{
    readonly IndexedShardReader[] _shards;
    readonly long[] _starts; // token offset of each shard; _starts[^1] == Length

    public TokenSequence(IReadOnlyList<IndexedShardReader> shards)
    {
        _shards = [.. shards];
        _starts = new long[_shards.Length + 1];
        for (int i = 0; i < _shards.Length; i++) _starts[i + 1] = _starts[i] + _shards[i].TokenCount;
    }

    public long Length => _starts[^1];
    public long Documents => _shards.Sum(s => s.DocumentCount);
    public IReadOnlyList<IndexedShardReader> Shards => _shards;

    public void Read(long start, Span<long> destination)
    {
        if (start < 0 || start + destination.Length > Length)
            throw new ArgumentOutOfRangeException(nameof(start), $"tokens [{start}, {start + destination.Length}) outside a sequence of {Length}");
        int shard = Array.BinarySearch(_starts, start);
        if (shard < 0) shard = ~shard - 1;
        while (destination.Length > 0)
        {
            while (_starts[shard + 1] <= start) shard++; // skip empty shards
            long local = start - _starts[shard];
            int n = (int)Math.Min(destination.Length, _shards[shard].TokenCount - local);
            _shards[shard].ReadTokens(local, destination[..n]);
            destination = destination[n..];
            start += n;
        }
    }

    public void Dispose()
    {
        foreach (var s in _shards) s.Dispose();
    }
}

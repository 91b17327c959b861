using MeLlama.Core.IO;
using MeLlama.Data.Shards;

namespace MeLlama.Data.Datasets;

/// <summary>How much checking <see cref="PreparedDataset.Open"/> does.</summary>
public enum VerifyLevel
{
    /// <summary>Every shard exists, has the manifest's sizes and a consistent Megatron header (O(shards)).</summary>
    Fast,
    /// <summary>Fast, plus the sha256 of every shard file against the manifest (reads everything).</summary>
    Full,
}

/// <summary>
/// A prepared dataset folder (manifest.json + Megatron shards) opened for reading: its train and held-out
/// splits as memory-mapped <see cref="TokenSequence"/>s. A missing, truncated or corrupt shard is an
/// error naming the file.
/// </summary>
public sealed class PreparedDataset : IDisposable
{
    public string Path { get; }
    public DatasetManifest Manifest { get; }
    public TokenSequence Train { get; }
    public TokenSequence Eval { get; }

    PreparedDataset(string path, DatasetManifest manifest, TokenSequence train, TokenSequence eval)
    {
        Path = path;
        Manifest = manifest;
        Train = train;
        Eval = eval;
    }

    public static PreparedDataset Open(string path, VerifyLevel verify = VerifyLevel.Fast)
    {
        path = System.IO.Path.GetFullPath(path);
        var manifest = DatasetManifest.Load(path);
        TokenSequence? train = null;
        try
        {
            train = OpenSplit(path, manifest.Train, verify);
            var eval = OpenSplit(path, manifest.Eval, verify);
            return new PreparedDataset(path, manifest, train, eval);
        }
        catch
        {
            train?.Dispose();
            throw;
        }
    }

    static TokenSequence OpenSplit(string dir, SplitInfo split, VerifyLevel verify)
    {
        var readers = new List<IndexedShardReader>();
        try
        {
            foreach (var shard in split.Shards)
            {
                string bin = System.IO.Path.Combine(dir, shard.Bin), idx = System.IO.Path.Combine(dir, shard.Idx);
                CheckFile(bin, shard.BinBytes, shard.BinSha256, verify);
                CheckFile(idx, shard.IdxBytes, shard.IdxSha256, verify);
                var reader = IndexedShardReader.Open(bin);
                readers.Add(reader);
                if (reader.DocumentCount != shard.Documents || reader.TokenCount != shard.Tokens)
                    throw new ShardCorruptException(bin, $"holds {reader.DocumentCount} documents / {reader.TokenCount} tokens, manifest says {shard.Documents} / {shard.Tokens}");
            }
            var sequence = new TokenSequence(readers);
            if (sequence.Length != split.Tokens)
                throw new ShardCorruptException(dir, $"split has {sequence.Length} tokens, manifest says {split.Tokens}");
            return sequence;
        }
        catch
        {
            foreach (var r in readers) r.Dispose();
            throw;
        }
    }

    static void CheckFile(string path, long bytes, string sha256, VerifyLevel verify)
    {
        if (!File.Exists(path)) throw new ShardCorruptException(path, "file is missing");
        long actual = new FileInfo(path).Length;
        if (actual != bytes) throw new ShardCorruptException(path, $"file is {actual} bytes, manifest says {bytes} (truncated or replaced)");
        if (verify == VerifyLevel.Full)
        {
            string hash = AtomicFile.Sha256File(path);
            if (!string.Equals(hash, sha256, StringComparison.OrdinalIgnoreCase))
                throw new ShardCorruptException(path, $"sha256 {hash} differs from the manifest's {sha256}");
        }
    }

    public void Dispose()
    {
        Train.Dispose();
        Eval.Dispose();
    }
}

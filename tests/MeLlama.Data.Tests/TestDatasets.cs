using MeLlama.Core.IO;
using MeLlama.Data.Datasets;
using MeLlama.Data.Shards;

namespace MeLlama.Data.Tests;

/// <summary>Writes small prepared datasets (shards + manifest) straight from token lists.</summary>
static class TestDatasets
{
    public static string Write(string dir, string name, IReadOnlyList<int[]> trainDocs, int docsPerShard = int.MaxValue,
        IReadOnlyList<int[]>? evalDocs = null, TokenDType dtype = TokenDType.UInt16)
    {
        Directory.CreateDirectory(dir);
        var manifest = new DatasetManifest
        {
            Name = name,
            Domain = name,
            Sensitivity = "public",
            Tokenizer = new TokenizerInfo("test", "none", 1000, 2),
            TokenDType = dtype.ToString().ToLowerInvariant(),
            Normalization = "NFC",
            EvalFraction = 0,
            Sources = [],
            Train = WriteSplit(dir, "train", trainDocs, docsPerShard, dtype),
            Eval = WriteSplit(dir, "eval", evalDocs ?? [], docsPerShard, dtype),
        };
        AtomicFile.WriteAllText(Path.Combine(dir, DatasetManifest.FileName), manifest.ToJson());
        return dir;
    }

    static SplitInfo WriteSplit(string dir, string split, IReadOnlyList<int[]> docs, int docsPerShard, TokenDType dtype)
    {
        var shards = new List<ShardInfo>();
        for (int start = 0, n = 0; start < docs.Count; start += docsPerShard, n++)
        {
            using var w = new IndexedShardWriter(Path.Combine(dir, $"{split}-{n:D5}.bin"), dtype, restricted: false);
            foreach (var d in docs.Skip(start).Take(docsPerShard)) w.Add(d);
            shards.Add(w.Complete());
        }
        return new SplitInfo(shards.Sum(s => s.Documents), shards.Sum(s => s.Tokens), shards);
    }

    /// <summary>Documents whose tokens encode (domain, doc, position) so any sample can be traced back.</summary>
    public static List<int[]> Numbered(int domain, int docs, int minLen, int maxLen, int seed)
    {
        var rng = new Random(seed);
        var result = new List<int[]>();
        for (int d = 0; d < docs; d++)
        {
            int len = rng.Next(minLen, maxLen + 1);
            var t = new int[len];
            for (int i = 0; i < len - 1; i++) t[i] = 3 + (domain * 20000 + d * 7 + i) % 60000;
            t[^1] = 2; // EOS
            result.Add(t);
        }
        return result;
    }
}

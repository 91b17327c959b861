using MeLlama.Core.IO;
using MeLlama.Data.Datasets;
using MeLlama.Data.Shards;
using MeLlama.Training.Config;

namespace MeLlama.Training.Tests;

/// <summary>Small prepared datasets and recipes for fast trainer tests.</summary>
static class TrainTestData
{
    public const int Vocab = 128;

    /// <summary>Writes a prepared dataset (shards + manifest) from token lists, as `mellama prepare` would.</summary>
    public static string WritePrepared(string dir, string name, IReadOnlyList<int[]> train, IReadOnlyList<int[]> eval,
        int vocab = Vocab, string tokenizerName = "test", string fingerprint = "test-fingerprint", int eos = 2)
    {
        Directory.CreateDirectory(dir);
        var manifest = new DatasetManifest
        {
            Name = name, Domain = name, Sensitivity = "public",
            Tokenizer = new TokenizerInfo(tokenizerName, fingerprint, vocab, eos),
            TokenDType = "uint16", Normalization = "NFC", EvalFraction = 0.1, Sources = [],
            Train = WriteSplit(dir, "train", train), Eval = WriteSplit(dir, "eval", eval),
        };
        AtomicFile.WriteAllText(Path.Combine(dir, DatasetManifest.FileName), manifest.ToJson());
        return dir;
    }

    static SplitInfo WriteSplit(string dir, string split, IReadOnlyList<int[]> docs)
    {
        if (docs.Count == 0) return SplitInfo.Empty;
        using var w = new IndexedShardWriter(Path.Combine(dir, $"{split}-00000.bin"), TokenDType.UInt16, restricted: false);
        foreach (var d in docs) w.Add(d);
        var shard = w.Complete();
        return new SplitInfo(shard.Documents, shard.Tokens, [shard]);
    }

    /// <summary>Learnable documents: arithmetic progressions (start, stride) mod the vocabulary, ending in EOS (2).</summary>
    public static List<int[]> Progressions(int count, int seed, int vocab = Vocab, int minLen = 20, int maxLen = 60)
    {
        var rng = new Random(seed);
        var docs = new List<int[]>();
        for (int d = 0; d < count; d++)
        {
            int len = rng.Next(minLen, maxLen + 1), start = rng.Next(3, vocab), stride = rng.Next(1, 4);
            var doc = new int[len];
            for (int i = 0; i < len - 1; i++) doc[i] = 3 + (start + i * stride) % (vocab - 3);
            doc[^1] = 2;
            docs.Add(doc);
        }
        return docs;
    }

    /// <summary>Two domains under <paramref name="root"/>/data.</summary>
    public static List<DomainSource> TwoDomains(string root)
    {
        string a = WritePrepared(Path.Combine(root, "data", "alpha"), "alpha", Progressions(300, 1), Progressions(20, 2));
        string b = WritePrepared(Path.Combine(root, "data", "beta"), "beta", Progressions(300, 3), Progressions(20, 4));
        return [new DomainSource { Name = "alpha", Path = a, Weight = 3 }, new DomainSource { Name = "beta", Path = b, Weight = 1 }];
    }

    /// <summary>A recipe for a ~60k-parameter model that takes milliseconds per step on one thread.</summary>
    public static TrainConfig TinyRecipe(string runDir, List<DomainSource> domains, long steps) => new()
    {
        RunDir = runDir,
        Model = new ModelSection { Arch = new ArchSection { HiddenSize = 32, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, IntermediateSize = 64, MaxPositionEmbeddings = 64 } },
        Data = new DataSection { Datasets = domains },
        SeqLen = 16, MicroBatch = 2, GradAccum = 2,
        Optimizer = new OptimizerSection { Lr = 1e-2, WeightDecay = 0.01 },
        Schedule = new ScheduleSection { WarmupRatio = 0.2 },
        Seed = 7, Threads = 1, MaxSteps = steps,
        Eval = new EvalSection { Interval = 4, Batches = 2 },
        Checkpoint = new CheckpointSection { Interval = 1000, KeepLast = 2 },
        Tensorboard = false, MeasurePeak = false,
    };
}

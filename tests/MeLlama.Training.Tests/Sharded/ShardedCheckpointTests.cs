using System.Text.Json;
using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using MeLlama.Training.Export;
using static TorchSharp.torch;
using static MeLlama.Training.Tests.Sharded.TinyRun;

namespace MeLlama.Training.Tests.Sharded;

/// <summary>Sharded save, resume on another world size or strategy, consolidation and export.</summary>
public class ShardedCheckpointTests
{
    const int Steps = 10;
    const int SaveAt = 5;

    /// <summary>Steps [0, steps) of full shard on <paramref name="world"/> ranks, saved into <paramref name="saveDir"/> when given; rank 0's losses and gathered weights.</summary>
    static (List<StepResult> Losses, Dictionary<string, float[]> Weights) RunSharded(int world, int steps, string? saveDir = null,
        ShardingStrategy strategy = ShardingStrategy.FullShard)
    {
        List<StepResult>? losses = null;
        Dictionary<string, float[]>? weights = null;
        InProcessRanks.Run(world, comm =>
        {
            using var model = new LlamaForCausalLM(Tiny, seed: Seed);
            using var engine = new FsdpTrainStep(model, comm, Options, strategy);
            var mine = new List<StepResult>();
            for (int s = 0; s < steps; s++)
            {
                using var scope = NewDisposeScope();
                mine.Add(engine.Step(RankBatch(s, comm.Rank, world), Lr(s)));
            }
            if (saveDir != null) engine.SaveState(saveDir);
            foreach (var u in engine.Units) u.Gather();
            if (comm.Rank == 0) (losses, weights) = (mine, Weights(model));
        });
        return (losses!, weights!);
    }

    /// <summary>Loads <paramref name="dir"/> on <paramref name="world"/> ranks (models initialised differently) and runs steps [SaveAt, Steps).</summary>
    static List<StepResult> Resume(string dir, int world, ShardingStrategy strategy)
    {
        var results = new List<StepResult>[world];
        InProcessRanks.Run(world, comm =>
        {
            using var model = new LlamaForCausalLM(Tiny, seed: Seed + 99);
            using var engine = new FsdpTrainStep(model, comm, Options, strategy);
            engine.LoadState(dir, SaveAt);
            Assert.Equal(SaveAt, engine.OptimizerSteps);
            var mine = new List<StepResult>();
            for (int s = SaveAt; s < Steps; s++)
            {
                using var scope = NewDisposeScope();
                mine.Add(engine.Step(RankBatch(s, comm.Rank, world), Lr(s)));
            }
            results[comm.Rank] = mine;
        });
        for (int r = 1; r < world; r++) AssertLossesMatch(results[0], results[r], $"rank {r} against rank 0");
        return results[0];
    }

    [Theory]
    [InlineData(1, "full_shard")]
    [InlineData(3, "full_shard")]
    [InlineData(3, "shard_grad_op")]
    [InlineData(2, "no_shard")]
    public void SaveOnTwoRanksResumesWithTheUninterruptedLosses(int resumeWorld, string strategy)
    {
        using var tmp = new TempDir();
        var (uninterrupted, _) = RunSharded(2, Steps);
        RunSharded(2, SaveAt, tmp.Path);

        string[] expectedFiles =
        [
            "model-shard-00000-of-00002.safetensors", "model-shard-00001-of-00002.safetensors",
            "optim-shard-00000-of-00002.safetensors", "optim-shard-00001-of-00002.safetensors", ShardedCheckpoint.MetadataFile,
        ];
        Assert.Equal(expectedFiles.Order(StringComparer.Ordinal), Directory.EnumerateFiles(tmp.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.True(ShardedCheckpoint.IsSharded(tmp.Path));
        var meta = ShardedCheckpoint.ReadMetadata(tmp.Path);
        Assert.Equal(2, meta.WorldSize);
        Assert.Equal("full_shard", meta.Strategy);
        Assert.Equal(Tiny.NumLayers + 2, meta.Units.Count);
        Assert.Equal(Tiny.ParameterCount(), meta.Units.Sum(u => u.Numel));

        var resumed = Resume(tmp.Path, resumeWorld, ShardingStrategies.Parse(strategy));
        AssertLossesMatch(uninterrupted.Skip(SaveAt).ToList(), resumed, $"resumed on {resumeWorld} ranks ({strategy})");
    }

    /// <summary>A manifest as <see cref="CheckpointStore"/> commits it (xxh128 of every file), for a folder the engine wrote directly.</summary>
    static void WriteManifest(string dir)
    {
        var manifest = new CheckpointManifest { Step = SaveAt, CreatedUtc = DateTimeOffset.UtcNow, WorldSize = 2 };
        foreach (var f in Directory.EnumerateFiles(dir))
            manifest.Files[Path.GetFileName(f)] = ManifestFile.Of(new FileInfo(f).Length, CheckpointManifest.Digest, Core.IO.ContentDigest.OfFile(f, CheckpointManifest.Digest));
        File.WriteAllText(Path.Combine(dir, CheckpointStore.ManifestName), JsonSerializer.Serialize(manifest, CheckpointManifestJson.Default.CheckpointManifest));
    }

    /// <summary>
    /// Resuming on as many ranks as saved, each rank reads its own slice files once and checks them against the manifest
    /// as it loads (the store's up-front check leaves them out): a flipped byte in rank 1's file makes LoadState throw
    /// CheckpointCorruptException on both ranks (rank 1 naming the file), so the trainer falls back on every rank alike;
    /// an intact folder resumes with the uninterrupted losses through the same path.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SameWorldResumeChecksEachRanksSliceFilesAsItLoads(bool damaged)
    {
        using var tmp = new TempDir();
        var (uninterrupted, _) = RunSharded(2, Steps);
        RunSharded(2, SaveAt, tmp.Path);
        WriteManifest(tmp.Path);
        var verified = ShardedCheckpoint.FilesVerifiedWhileLoading(2, ShardingStrategy.FullShard);
        Assert.Equal(4, verified.Count);
        Assert.Empty(ShardedCheckpoint.FilesVerifiedWhileLoading(2, ShardingStrategy.NoShard));
        string victim = ShardedCheckpoint.OptimizerShardFile(1, 2);
        if (damaged)
        {
            using var fs = new FileStream(Path.Combine(tmp.Path, victim), FileMode.Open, FileAccess.ReadWrite);
            fs.Position = fs.Length / 2;
            int b = fs.ReadByte();
            fs.Position = fs.Length / 2;
            fs.WriteByte((byte)(b ^ 0x10));
        }
        // Only the load itself can catch the flip: the up-front check skips the slice files.
        Assert.True(CheckpointStore.Check(tmp.Path, full: true, verified).Ok);
        Assert.Equal(!damaged, CheckpointStore.Check(tmp.Path, full: true).Ok);
        if (!damaged)
        {
            AssertLossesMatch(uninterrupted.Skip(SaveAt).ToList(), Resume(tmp.Path, 2, ShardingStrategy.FullShard), "verified resume on 2 ranks");
            return;
        }
        var problems = new string?[2];
        InProcessRanks.Run(2, comm =>
        {
            using var model = new LlamaForCausalLM(Tiny, seed: Seed + 99);
            using var engine = new FsdpTrainStep(model, comm, Options, ShardingStrategy.FullShard);
            problems[comm.Rank] = Assert.Throws<CheckpointCorruptException>(() => engine.LoadState(tmp.Path, SaveAt)).Problem;
        });
        Assert.Equal($"{victim} fails its xxh128 checksum", problems[1]);
        Assert.Equal("a slice file failed its checksum on another rank", problems[0]);
    }

    /// <summary>
    /// A load that fails on one rank for any other reason (here rank 1's slice file is gone) fails on every rank at
    /// once, the others saying so, instead of leaving them in a collective until the timeout; nobody falls back.
    /// </summary>
    [Fact]
    public void ALoadFailureOnOneRankFailsEveryRankAtOnce()
    {
        using var tmp = new TempDir();
        RunSharded(2, SaveAt, tmp.Path);
        WriteManifest(tmp.Path);
        File.Delete(Path.Combine(tmp.Path, ShardedCheckpoint.ModelShardFile(1, 2)));
        var failures = new Exception?[2];
        var clock = System.Diagnostics.Stopwatch.StartNew();
        InProcessRanks.Run(2, comm =>
        {
            using var model = new LlamaForCausalLM(Tiny, seed: Seed + 99);
            using var engine = new FsdpTrainStep(model, comm, Options, ShardingStrategy.FullShard);
            failures[comm.Rank] = Record.Exception(() => engine.LoadState(tmp.Path, SaveAt));
        });
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"took {clock.Elapsed}");
        Assert.IsType<FileNotFoundException>(failures[1]);
        Assert.Contains("model-shard-00001-of-00002.safetensors (rank 1 of 2) is missing", failures[1]!.Message);
        var other = Assert.IsType<IOException>(failures[0]);
        Assert.Contains("failed to load on another rank", other.Message);
    }

    [Theory]
    [InlineData("full_shard")]
    [InlineData("no_shard")] // each rank writes its slice of the full buffer it holds
    public void ThreeRankCheckpointWithPaddingResumesOnTwoRanks(string savedWith)
    {
        using var tmp = new TempDir();
        var (uninterrupted, _) = RunSharded(2, Steps);
        RunSharded(3, SaveAt, tmp.Path, ShardingStrategies.Parse(savedWith));
        var meta = ShardedCheckpoint.ReadMetadata(tmp.Path);
        Assert.Equal(savedWith, meta.Strategy);
        Assert.Contains(meta.Units, u => u.PaddedNumel > u.Numel); // uneven split: padding is skipped on load
        AssertLossesMatch(uninterrupted.Skip(SaveAt).ToList(), Resume(tmp.Path, 2, ShardingStrategy.FullShard), $"3 ranks ({savedWith}) → 2 ranks");
    }

    [Fact]
    public void SingleProcessEngineContinuesFromConsolidatedShardedCheckpoint()
    {
        using var tmp = new TempDir();
        var (uninterrupted, _) = RunSharded(2, Steps);
        string sharded = Directory.CreateDirectory(tmp["sharded"]).FullName;
        string single = Directory.CreateDirectory(tmp["single"]).FullName;
        RunSharded(2, SaveAt, sharded);
        ShardedCheckpoint.WriteSingleProcessState(sharded, single);
        var (continued, _) = RunSingle(SaveAt, Steps, single, seed: Seed + 7);
        AssertLossesMatch(uninterrupted.Skip(SaveAt).ToList(), continued, "single process from the consolidated checkpoint");
        var (straight, _) = RunSingle(0, Steps);
        AssertLossesMatch(straight.Skip(SaveAt).ToList(), continued, "single process, resumed vs uninterrupted");
    }

    [Fact]
    public void SingleProcessCheckpointContinuesOnThreeRanks()
    {
        using var tmp = new TempDir();
        var (straight, _) = RunSingle(0, Steps);
        using (var scope = NewDisposeScope())
        {
            using var model = new LlamaForCausalLM(Tiny, seed: Seed);
            using var engine = new SingleProcessTrainStep(model, Options);
            for (int s = 0; s < SaveAt; s++)
            {
                using var stepScope = NewDisposeScope();
                engine.Step(GlobalBatch(s), Lr(s));
            }
            engine.SaveState(tmp.Path);
        }
        Assert.False(ShardedCheckpoint.IsSharded(tmp.Path));
        AssertLossesMatch(straight.Skip(SaveAt).ToList(), Resume(tmp.Path, 3, ShardingStrategy.FullShard), "single process → 3 ranks");
    }

    [Fact]
    public void ExportOfShardedCheckpointEqualsTheGatheredWeightsAndTheSingleProcessExport()
    {
        const int steps = 3;
        using var tmp = new TempDir();
        Dictionary<string, float[]> gathered = [];
        string shardedCheckpoint = WriteCheckpoint(tmp["sharded-run"], steps, Tiny, dir => gathered = RunSharded(3, steps, dir).Weights);
        Assert.False(File.Exists(Path.Combine(shardedCheckpoint, CheckpointFiles.Model)));
        string singleCheckpoint = WriteSingleProcessCheckpoint(tmp["single-run"], steps, Tiny);

        string fromSharded = HfExporter.Export(tmp["sharded-run"], tmp["hf-sharded"], ScalarType.Float32);
        string fromSingle = HfExporter.Export(singleCheckpoint, tmp["hf-single"], ScalarType.Float32);
        Assert.Equal(File.ReadAllText(Path.Combine(fromSingle, "config.json")), File.ReadAllText(Path.Combine(fromSharded, "config.json")));
        using var a = SafeTensorsReader.Open(Path.Combine(fromSharded, "model.safetensors"));
        using var b = SafeTensorsReader.Open(Path.Combine(fromSingle, "model.safetensors"));
        Assert.Equal(b.Entries.Keys.Order(StringComparer.Ordinal), a.Entries.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(gathered.Keys.Order(StringComparer.Ordinal), a.Entries.Keys.Order(StringComparer.Ordinal));
        foreach (var name in a.Entries.Keys)
        {
            using var scope = NewDisposeScope();
            var exported = a.ReadTensor(name);
            Assert.Equal(b.Entry(name).Shape, exported.shape);
            Assert.Equal(gathered[name], exported.data<float>().ToArray()); // bit-exact: consolidation only moves bytes
            double maxDiff = (exported - b.ReadTensor(name)).abs().max().item<float>();
            Assert.True(maxDiff < 1e-5, $"{name}: sharded vs single-process export differ by {maxDiff}");
        }
        using var loaded = HfCheckpoint.LoadModel(fromSharded); // and it is a loadable HF folder
        Assert.Equal(Tiny.ParameterCount(), loaded.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void MissingOrTruncatedShardFileIsNamedInTheError()
    {
        using var tmp = new TempDir();
        RunSharded(2, 1, tmp.Path);

        string truncated = Path.Combine(tmp.Path, ShardedCheckpoint.OptimizerShardFile(1, 2));
        using (var f = new FileStream(truncated, FileMode.Open)) f.SetLength(f.Length - 16);
        var bad = Assert.ThrowsAny<Exception>(() => Resume(tmp.Path, 1, ShardingStrategy.FullShard));
        Assert.Contains("optim-shard-00001-of-00002.safetensors", Flatten(bad));
        Assert.Contains("damaged", Flatten(bad));

        File.Delete(Path.Combine(tmp.Path, ShardedCheckpoint.ModelShardFile(0, 2)));
        var missing = Assert.ThrowsAny<Exception>(() => ShardedCheckpoint.Consolidate(tmp.Path, (_, _) => { }));
        Assert.IsType<FileNotFoundException>(missing);
        Assert.Contains("model-shard-00000-of-00002.safetensors", missing.Message);
        Assert.Contains("missing", missing.Message);

        File.Delete(Path.Combine(tmp.Path, ShardedCheckpoint.MetadataFile));
        Assert.False(ShardedCheckpoint.IsSharded(tmp.Path));
        Assert.Contains(ShardedCheckpoint.MetadataFile, Assert.Throws<FileNotFoundException>(() => ShardedCheckpoint.ReadMetadata(tmp.Path)).Message);
    }

    [Fact]
    public void CheckpointOfAnotherModelShapeIsRejected()
    {
        using var tmp = new TempDir();
        RunSharded(2, 1, tmp.Path);
        var other = Tiny with { IntermediateSize = 48 };
        var e = Assert.ThrowsAny<Exception>(() => InProcessRanks.Run(1, comm =>
        {
            using var model = new LlamaForCausalLM(other, seed: Seed);
            using var engine = new FsdpTrainStep(model, comm, Options);
            engine.LoadState(tmp.Path, 1);
        }));
        Assert.Contains("do not match the model", Flatten(e));
        Assert.Contains("mlp", Flatten(e));
    }

    static string Flatten(Exception e) => e is AggregateException a ? string.Join(" | ", a.Flatten().InnerExceptions.Select(x => x.Message)) : e.Message;
}

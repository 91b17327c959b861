using System.Text.Json;
using MeLlama.Core.IO;
using MeLlama.Model;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Engine;
using MeLlama.Training.Loop;
using MeLlama.Training.Optim;
using MeLlama.TestSupport;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests;

/// <summary>
/// A one-process resume checks the weights' and optimizer state's checksums while it loads them (one read instead of a
/// hashing pass and then a load). These tests pin that this single pass is as safe as the two-pass check: a flipped
/// byte is caught by the load itself and the resume falls back to the previous checkpoint, and an intact checkpoint
/// loads bit for bit.
/// </summary>
public sealed class VerifiedResumeTests
{
    const int Steps = 8;

    sealed class SimulatedCrash : Exception;

    public static TheoryData<string, string> Damage => new()
    {
        { CheckpointFiles.Optimizer, "data" },
        { CheckpointFiles.Model, "data" },
        { CheckpointFiles.Model, "header" },
    };

    [Theory]
    [MemberData(nameof(Damage))]
    public void AFlippedByteIsCaughtByTheLoadAndTheResumeFallsBackToThePreviousCheckpoint(string file, string where)
    {
        using var tmp = new TempDir();
        var domains = TrainTestData.TwoDomains(tmp.Path);
        var baseConfig = TrainTestData.TinyRecipe(tmp["straight"], domains, Steps) with { Checkpoint = new() { Interval = 3, KeepLast = 5 } };
        var straight = TrainerHarness.Train(baseConfig);

        // A crash after step 7 leaves checkpoints 3 and 6; then one byte of step 6 rots.
        var config = baseConfig with { RunDir = tmp["damaged"] };
        Assert.Throws<SimulatedCrash>(() => TrainerHarness.Train(config, afterStep: s => { if (s == 7) throw new SimulatedCrash(); }));
        var store = new CheckpointStore(config.RunDir);
        string newest = store.FindLatestGood(out _)!.Dir;
        Assert.EndsWith(CheckpointStore.DirName(6), newest);
        FlipOneByte(Path.Combine(newest, file), where);

        // The up-front check leaves these files to the load, so only the load can catch the flip: the new path is under test.
        Assert.True(CheckpointStore.Check(newest, full: true, OptimizerCheckpoint.FilesVerifiedWhileLoading).Ok);
        Assert.False(CheckpointStore.Check(newest, full: true).Ok);
        using (var engine = EngineFor(newest))
            Assert.Throws<CheckpointCorruptException>(() => engine.LoadState(newest, 6));

        // The trainer rejects step 6, resumes from step 3 and ends exactly where the uninterrupted run did.
        var resumed = TrainerHarness.Train(config);
        Assert.Equal(TrainEnd.Completed, resumed.End);
        Assert.Equal(Steps, resumed.Step);
        var straightLosses = TrainerHarness.TrainLosses(baseConfig.RunDir);
        var losses = TrainerHarness.TrainLosses(config.RunDir);
        foreach (long step in new long[] { 4, 5, 6, 7, 8 })
            Assert.True(BitConverter.DoubleToInt64Bits(straightLosses[step]) == BitConverter.DoubleToInt64Bits(losses[step]), $"step {step}: {losses[step]:R} != {straightLosses[step]:R}");
        Assert.Equal(TrainerHarness.ModelSha(straight.Checkpoint!), TrainerHarness.ModelSha(resumed.Checkpoint!));
        Assert.Equal(TrainerHarness.OptimizerSha(straight.Checkpoint!), TrainerHarness.OptimizerSha(resumed.Checkpoint!));
    }

    [Fact]
    public void AnIntactCheckpointLoadsBitForBitThroughTheVerifyingLoad()
    {
        using var tmp = new TempDir();
        var config = TrainTestData.TinyRecipe(tmp["run"], TrainTestData.TwoDomains(tmp.Path), 3);
        var run = TrainerHarness.Train(config);
        string dir = run.Checkpoint!;
        Assert.NotNull(CheckpointStore.ManifestFiles(dir)); // a store checkpoint: the load verifies

        // Into a fresh engine, then written back out: the same bytes as the checkpoint's files.
        using var engine = EngineFor(dir);
        engine.LoadState(dir, 3);
        string copy = tmp["copy"];
        Directory.CreateDirectory(copy);
        engine.SaveState(copy);
        Assert.Equal(TrainerHarness.ModelSha(dir), TrainerHarness.ModelSha(copy));
        Assert.Equal(TrainerHarness.OptimizerSha(dir), TrainerHarness.OptimizerSha(copy));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AFormatOneCheckpointWithSha256ChecksumsStillVerifiesAndLoads(bool damaged)
    {
        using var tmp = new TempDir();
        var config = TrainTestData.TinyRecipe(tmp["run"], TrainTestData.TwoDomains(tmp.Path), 3);
        string dir = TrainerHarness.Train(config).Checkpoint!;
        string optimizerSha = TrainerHarness.OptimizerSha(dir);

        // What a checkpoint written before XXH128 looks like: format 1, sha256 of every file.
        string manifestPath = Path.Combine(dir, CheckpointStore.ManifestName);
        var manifest = JsonSerializer.Deserialize(File.ReadAllText(manifestPath), CheckpointManifestJson.Default.CheckpointManifest)!;
        Assert.Equal(CheckpointManifest.CurrentFormat, manifest.FormatVersion);
        Assert.All(manifest.Files.Values, f => Assert.True(f.Xxh128 is { Length: 32 } && f.Sha256 is null));
        var old = manifest with
        {
            FormatVersion = 1,
            Files = manifest.Files.ToDictionary(f => f.Key, f => new ManifestFile(f.Value.Size, Sha256: ContentDigest.OfFile(Path.Combine(dir, f.Key), DigestAlgorithm.Sha256))),
        };
        File.WriteAllText(manifestPath, JsonSerializer.Serialize(old, CheckpointManifestJson.Default.CheckpointManifest));
        Assert.Contains("\"sha256\"", File.ReadAllText(manifestPath));
        Assert.DoesNotContain("xxh128", File.ReadAllText(manifestPath));

        if (damaged) FlipOneByte(Path.Combine(dir, CheckpointFiles.Optimizer), "data");
        var check = CheckpointStore.Check(dir);
        Assert.Equal(!damaged, check.Ok);
        using var engine = EngineFor(dir);
        if (damaged)
        {
            Assert.Equal($"{CheckpointFiles.Optimizer} fails its sha256 checksum", check.Problem);
            var e = Assert.Throws<CheckpointCorruptException>(() => engine.LoadState(dir, 3));
            Assert.Contains("sha256", e.Problem);
            return;
        }
        engine.LoadState(dir, 3);
        string copy = tmp["copy"];
        Directory.CreateDirectory(copy);
        engine.SaveState(copy);
        Assert.Equal(optimizerSha, TrainerHarness.OptimizerSha(copy));
    }

    [Fact]
    public void ManifestChecksumsAreCanonicalXxh128AsXxhsumPrintsThem()
    {
        // xxhsum -H2 (XXH3 128-bit, canonical big-endian hex): anyone can check a checkpoint without MeLlama.
        using var tmp = new TempDir();
        string empty = Path.Combine(tmp.Path, "empty"), abc = Path.Combine(tmp.Path, "abc");
        File.WriteAllBytes(empty, []);
        File.WriteAllText(abc, "abc");
        Assert.Equal("99aa06d3014798d86001c324468d497f", ContentDigest.OfFile(empty, DigestAlgorithm.Xxh128));
        Assert.Equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", ContentDigest.OfFile(abc, DigestAlgorithm.Sha256));
    }

    /// <summary>A one-process engine for the checkpoint's model, its state zero (not the checkpoint's).</summary>
    static SingleProcessTrainStep EngineFor(string checkpointDir)
    {
        var model = ModelFactory.Empty(LlamaConfig.FromHfJson(Path.Combine(checkpointDir, CheckpointFiles.ModelConfig)), CPU, ScalarType.Float32);
        return new SingleProcessTrainStep(model, new TrainStepOptions(0.9, 0.95, 1e-8, 0.01, 1.0, false));
    }

    /// <summary>XORs one byte: in the JSON header (byte 9, just after its length prefix and opening brace) or mid-file, in tensor data.</summary>
    static void FlipOneByte(string path, string where)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        long offset = where == "header" ? 9 : fs.Length / 2;
        fs.Position = offset;
        int b = fs.ReadByte();
        fs.Position = offset;
        fs.WriteByte((byte)(b ^ 0x01));
    }
}

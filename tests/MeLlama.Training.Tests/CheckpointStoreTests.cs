using MeLlama.Training.Checkpointing;
using MeLlama.Training.Loop;
using MeLlama.TestSupport;

namespace MeLlama.Training.Tests;

public sealed class CheckpointStoreTests
{
    static string SaveFake(CheckpointStore store, long step, string content = "x") =>
        store.Save(step, dir =>
        {
            File.WriteAllText(Path.Combine(dir, "model.safetensors"), content + step);
            File.WriteAllText(Path.Combine(dir, "trainer_state.json"), "{}");
        });

    [Fact]
    public void SaveWritesManifestAndLatestPointerAndPassesVerification()
    {
        using var tmp = new TempDir();
        var store = new CheckpointStore(tmp.Path);
        string dir = SaveFake(store, 5);
        Assert.Equal(Path.Combine(store.Root, "step-00000005"), dir);
        Assert.True(CheckpointStore.Check(dir).Ok);
        Assert.Equal("step-00000005", File.ReadAllText(Path.Combine(store.Root, CheckpointStore.LatestName)).Trim());
        Assert.Empty(Directory.EnumerateDirectories(store.Root, ".*"));
    }

    [Theory]
    [InlineData("truncate")]
    [InlineData("delete-file")]
    [InlineData("delete-manifest")]
    [InlineData("flip-byte")]
    public void ATornNewestCheckpointIsNeverLoadedAndTheOlderOneIsUsed(string damage)
    {
        using var tmp = new TempDir();
        var store = new CheckpointStore(tmp.Path);
        SaveFake(store, 1);
        string newest = SaveFake(store, 2, "longer content ");
        string file = Path.Combine(newest, "model.safetensors");
        switch (damage)
        {
            case "truncate": using (var fs = new FileStream(file, FileMode.Open)) fs.SetLength(3); break;
            case "delete-file": File.Delete(file); break;
            case "delete-manifest": File.Delete(Path.Combine(newest, CheckpointStore.ManifestName)); break;
            case "flip-byte":
                var bytes = File.ReadAllBytes(file);
                bytes[0] ^= 1;
                File.WriteAllBytes(file, bytes);
                break;
        }
        Assert.False(CheckpointStore.Check(newest).Ok);
        var good = store.FindLatestGood(out var skipped);
        Assert.Equal(1, good!.Step);
        Assert.Single(skipped);
        Assert.Equal(2, skipped[0].Step);
    }

    [Fact]
    public void KeepLastDeletesOnlyOlderCompleteCheckpointsAndNeverTheOnlyGoodOne()
    {
        using var tmp = new TempDir();
        var store = new CheckpointStore(tmp.Path);
        for (int s = 1; s <= 4; s++) SaveFake(store, s);
        store.Prune(2);
        Assert.Equal([4L, 3L], store.List().Select(c => c.Step));

        // Steps 5 and 6 are torn: the newest good one (4) and its predecessor must survive pruning.
        string five = SaveFake(store, 5), six = SaveFake(store, 6);
        File.Delete(Path.Combine(five, "model.safetensors"));
        File.Delete(Path.Combine(six, CheckpointStore.ManifestName));
        store.Prune(1);
        Assert.Equal([6L, 5L, 4L], store.List().Select(c => c.Step));
        Assert.Equal(4, store.FindLatestGood(out _)!.Step);
    }

    [Fact]
    public void LeftoversOfAKilledSaveAreCleanedAndIgnored()
    {
        using var tmp = new TempDir();
        var store = new CheckpointStore(tmp.Path);
        SaveFake(store, 1);
        // A save killed mid-way by a process that no longer exists.
        string leftover = Path.Combine(store.Root, ".step-00000002.tmp-999999-abc");
        Directory.CreateDirectory(leftover);
        File.WriteAllText(Path.Combine(leftover, "model.safetensors"), "partial");
        Assert.Equal(1, store.FindLatestGood(out _)!.Step);
        store.CleanTemporaries();
        Assert.False(Directory.Exists(leftover));
    }

    [Fact]
    public void TrainerFallsBackToThePreviousCheckpointWhenTheNewestIsTornAndStillReachesTheSameWeights()
    {
        using var tmp = new TempDir();
        var domains = TrainTestData.TwoDomains(tmp.Path);
        var config = TrainTestData.TinyRecipe(tmp["run"], domains, 6) with { Checkpoint = new() { Interval = 2, KeepLast = 5 } };
        var full = TrainerHarness.Train(config);
        string finalSha = TrainerHarness.ModelSha(full.Checkpoint!);

        // Drop the final checkpoint, tear step 4: resume must use step 2 and retrain 3..6 to the same weights.
        var store = new CheckpointStore(config.RunDir);
        Directory.Delete(full.Checkpoint!, recursive: true);
        string four = Path.Combine(store.Root, CheckpointStore.DirName(4));
        using (var fs = new FileStream(Path.Combine(four, "optimizer.safetensors"), FileMode.Open)) fs.SetLength(fs.Length / 2);
        var resumed = TrainerHarness.Train(config);
        Assert.Equal(TrainEnd.Completed, resumed.End);
        Assert.Equal(finalSha, TrainerHarness.ModelSha(resumed.Checkpoint!));
        Assert.True(CheckpointStore.Check(four).Ok, "step 4 was rewritten by the resumed run");
    }
}

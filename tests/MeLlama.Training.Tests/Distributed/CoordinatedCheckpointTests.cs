using System.Text.Json;
using MeLlama.Core.IO;
using MeLlama.TestSupport;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Loop;
using MeLlama.Training.Tests.Sharded;

namespace MeLlama.Training.Tests.Distributed;

/// <summary>
/// The multi-rank checkpoint commit and the loop's agreements, on ranks that are threads with real TCP collectives.
/// The rank files here are written by the test (the engine's own sharded files are exercised by the launched tests).
/// </summary>
public class CoordinatedCheckpointTests
{
    static void WriteRankFile(string dir, int rank, int bytes = 4096)
    {
        var data = new byte[bytes];
        new Random(rank + 17).NextBytes(data);
        File.WriteAllBytes(Path.Combine(dir, $"shard-rank{rank}.bin"), data);
    }

    static void WriteRootFiles(string dir) => File.WriteAllText(Path.Combine(dir, "trainer_state.json"), "{\"step\": 1}");

    static CheckpointManifest Manifest(string dir) =>
        JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(dir, CheckpointStore.ManifestName)), CheckpointManifestJson.Default.CheckpointManifest)!;

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void AllRanksCommitOneCheckpointWhoseManifestCoversEveryRanksFiles(int world)
    {
        using var tmp = new TempDir();
        var dirs = new string[world];
        InProcessRanks.Run(world, comm =>
        {
            var w = TrainingWorld.Of(comm);
            var store = new CheckpointStore(tmp.Path);
            dirs[comm.Rank] = store.SaveCoordinated(7, w, d => WriteRankFile(d, comm.Rank), WriteRootFiles);
        });
        Assert.All(dirs, d => Assert.Equal(dirs[0], d));
        Assert.Equal(CheckpointStore.DirName(7), Path.GetFileName(dirs[0]));
        var manifest = Manifest(dirs[0]);
        Assert.Equal(world, manifest.WorldSize);
        Assert.Equal(Enumerable.Range(0, world).Select(r => $"shard-rank{r}.bin").Append("trainer_state.json").Order(StringComparer.Ordinal),
            manifest.Files.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, entry) in manifest.Files)
        {
            // Hashed by different ranks and gathered through the int64 reduction: must equal the file's own digest.
            Assert.Equal(ContentDigest.OfFile(Path.Combine(dirs[0], name), DigestAlgorithm.Xxh128), entry.Xxh128);
            Assert.Null(entry.Sha256);
            Assert.Equal(new FileInfo(Path.Combine(dirs[0], name)).Length, entry.Size);
        }
        Assert.True(CheckpointStore.Check(dirs[0]).Ok);
        Assert.Equal(CheckpointStore.DirName(7), File.ReadAllText(Path.Combine(tmp.Path, "checkpoints", CheckpointStore.LatestName)).Trim());
        Assert.Empty(Directory.EnumerateDirectories(Path.Combine(tmp.Path, "checkpoints"), ".step-*")); // no temporary left
    }

    [Fact]
    public void ATornMultiRankSaveIsIncompleteAndResumeFallsBackToThePreviousOne()
    {
        using var tmp = new TempDir();
        InProcessRanks.Run(2, comm =>
        {
            var w = TrainingWorld.Of(comm);
            var store = new CheckpointStore(tmp.Path);
            store.SaveCoordinated(10, w, d => WriteRankFile(d, comm.Rank), WriteRootFiles);
            store.SaveCoordinated(20, w, d => WriteRankFile(d, comm.Rank), WriteRootFiles);
        });
        var store = new CheckpointStore(tmp.Path);
        string newest = Path.Combine(store.Root, CheckpointStore.DirName(20));
        File.Delete(Path.Combine(newest, "shard-rank1.bin")); // one rank's shard lost (e.g. its node died before its data reached the server)

        var check = CheckpointStore.Check(newest);
        Assert.False(check.Ok);
        Assert.Contains("shard-rank1.bin is missing", check.Problem);
        var good = store.FindLatestGood(out var skipped);
        Assert.Equal(10, good!.Step);
        Assert.Equal(20, Assert.Single(skipped).Step);
    }

    [Fact]
    public void RankFilesInASubfolderAreCoveredByTheManifestToo()
    {
        using var tmp = new TempDir();
        InProcessRanks.Run(2, comm =>
        {
            var store = new CheckpointStore(tmp.Path);
            store.SaveCoordinated(3, TrainingWorld.Of(comm), d =>
            {
                var shards = Directory.CreateDirectory(Path.Combine(d, "shards")).FullName;
                WriteRankFile(shards, comm.Rank);
            }, WriteRootFiles);
        });
        string dir = Path.Combine(tmp.Path, "checkpoints", CheckpointStore.DirName(3));
        Assert.Equal(["shards/shard-rank0.bin", "shards/shard-rank1.bin", "trainer_state.json"], Manifest(dir).Files.Keys.Order(StringComparer.Ordinal));
        Assert.True(CheckpointStore.Check(dir).Ok);
        File.WriteAllBytes(Path.Combine(dir, "shards", "shard-rank0.bin"), new byte[4096]); // same size, other bytes
        Assert.Contains("shards/shard-rank0.bin fails its xxh128 checksum", CheckpointStore.Check(dir).Problem);
    }

    [Fact]
    public void AllRanksAgreeOnTheNewestGoodCheckpointWhenOnlyAnotherRankSeesTheCorruption()
    {
        using var tmp = new TempDir();
        InProcessRanks.Run(2, comm =>
        {
            var store = new CheckpointStore(tmp.Path);
            var w = TrainingWorld.Of(comm);
            store.SaveCoordinated(10, w, d => WriteRankFile(d, comm.Rank), WriteRootFiles);
            store.SaveCoordinated(20, w, d => WriteRankFile(d, comm.Rank), WriteRootFiles);
        });
        // Same size, other bytes: only hashing finds it, and file #1 of [shard-rank0, shard-rank1, trainer_state] is rank 1's share.
        File.WriteAllBytes(Path.Combine(tmp.Path, "checkpoints", CheckpointStore.DirName(20), "shard-rank1.bin"), new byte[4096]);
        var chosen = new CheckpointCheck?[2];
        var skipped = new List<CheckpointCheck>[2];
        InProcessRanks.Run(2, comm => chosen[comm.Rank] = new CheckpointStore(tmp.Path).FindLatestGood(TrainingWorld.Of(comm), out skipped[comm.Rank]));
        Assert.All(chosen, c => Assert.Equal(10, c!.Step));
        Assert.All(skipped, s => Assert.Equal(20, Assert.Single(s).Step));
        Assert.Contains("shard-rank1.bin fails its xxh128 checksum", skipped[1][0].Problem);
        Assert.Contains("on another rank", skipped[0][0].Problem);
    }

    [Fact]
    public void ARankFailingToWriteFailsTheSaveOnEveryRankAndCommitsNothing()
    {
        using var tmp = new TempDir();
        var errors = new Exception?[2];
        InProcessRanks.Run(2, comm =>
        {
            var w = TrainingWorld.Of(comm);
            var store = new CheckpointStore(tmp.Path);
            errors[comm.Rank] = Record.Exception(() => store.SaveCoordinated(5, w, d =>
            {
                if (comm.Rank == 1) throw new IOException("disk full on rank 1");
                WriteRankFile(d, comm.Rank);
            }, WriteRootFiles));
        });
        Assert.Contains("disk full on rank 1", errors[1]!.Message);
        Assert.Contains("another rank failed", errors[0]!.Message);
        var store = new CheckpointStore(tmp.Path);
        Assert.Empty(store.List());
        Assert.Null(store.FindLatestGood(out _));
        Assert.Empty(Directory.EnumerateDirectories(store.Root, ".step-*"));
    }

    [Fact]
    public void DecisionsAreTakenOnReducedValuesSoEveryRankAgrees()
    {
        var any = new bool[3];
        var max = new double[3][];
        var agreeSame = new bool[3];
        var agreeDifferent = new bool[3];
        var broadcast = new long[3][];
        InProcessRanks.Run(3, comm =>
        {
            var w = TrainingWorld.Of(comm);
            any[comm.Rank] = w.Any(comm.Rank == 2);                        // a signal seen by rank 2 only
            max[comm.Rank] = w.Max(comm.Rank == 1 ? 3 : 0, comm.Rank);     // signal code, budget flag
            agreeSame[comm.Rank] = w.Agree("recipe");
            agreeDifferent[comm.Rank] = w.Agree(comm.Rank == 0 ? "recipe" : "other recipe");
            broadcast[comm.Rank] = w.Broadcast(comm.Rank == 0 ? 42 : -1);  // the checkpoint step rank 0 chose
        });
        Assert.All(any, Assert.True);
        Assert.All(max, m => Assert.Equal([3.0, 2.0], m));
        Assert.All(agreeSame, Assert.True);
        Assert.All(agreeDifferent, Assert.False);
        Assert.All(broadcast, b => Assert.Equal([42L], b));
    }
}

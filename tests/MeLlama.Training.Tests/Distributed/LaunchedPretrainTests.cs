using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.RegularExpressions;
using MeLlama.TestSupport;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;

namespace MeLlama.Training.Tests.Distributed;

/// <summary>One uninterrupted 2-rank `mellama launch -- pretrain` run, shared by the tests that only read what it produced.</summary>
public sealed class TwoRankRun : IDisposable
{
    public const int Steps = 60;
    public TempDir Tmp { get; } = new();
    public List<DomainSource> Domains { get; }
    public TrainConfig Config { get; }
    public int? ExitCode { get; }
    public string Output { get; }
    public TimeSpan Elapsed { get; }

    public TwoRankRun()
    {
        Domains = TrainTestData.TwoDomains(Tmp.Path);
        // A held-out set of exactly 5 samples of 16 + 1 tokens: dealt round-robin to 2 ranks with micro-batches of 2, rank 0
        // holds 2 batches and rank 1 one, so rank 1 must run a padding forward to keep the engine's gathers in step.
        string odd = TrainTestData.WritePrepared(Path.Combine(Tmp.Path, "data", "odd"), "odd", TrainTestData.Progressions(5, 9),
            [[.. Enumerable.Range(0, 5 * 16 + 1).Select(i => 3 + i % 100)]]);
        List<DomainSource> evalSets = [Domains[0], new DomainSource { Name = "odd", Path = odd }];
        // No final save: this run must not depend on the engine's sharded SaveState (the preemption test covers that).
        Config = LaunchedPretrainTests.Recipe(Tmp["two"], Domains) with
        {
            Data = new DataSection { Datasets = Domains, EvalSets = evalSets },
            // All held-out samples on any world size (5 and ~50), so 1 and 2 ranks evaluate the same samples.
            Eval = new EvalSection { Interval = 30, Batches = 1000 },
            Checkpoint = new CheckpointSection { Interval = 1000, KeepLast = 2, SaveFinal = false }, Tensorboard = true,
        };
        var clock = Stopwatch.StartNew();
        using var run = new LaunchedRun(2, LaunchedRun.WriteRecipe(Config, Tmp["two.json"]));
        ExitCode = run.WaitForExit(TimeSpan.FromSeconds(180));
        Elapsed = clock.Elapsed;
        Output = run.Output;
    }

    public void Dispose() => Tmp.Dispose();
}

/// <summary>
/// `mellama launch --nproc 2 -- pretrain` end to end with the real binary: sharded (FSDP, TCP collectives) training that
/// matches one process on the same global batch, rank-0-only run files, rank-tagged logs, a stop signal to one rank
/// stopping both, and a killed rank failing the job with its name.
/// </summary>
public sealed partial class LaunchedPretrainTests(TwoRankRun run) : IClassFixture<TwoRankRun>
{
    const int SeqLen = 16, MicroBatch = 2, GlobalSequences = 4;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);

    /// <summary>
    /// The tiny recipe with its global batch fixed in tokens: 1 rank accumulates 2 micro-batches of 2, 2 ranks take one
    /// micro-batch of 2 each, and the rank partition of the sample stream gives both the same 4 sequences per step.
    /// </summary>
    internal static TrainConfig Recipe(string runDir, List<DomainSource> domains, long steps = TwoRankRun.Steps) =>
        TrainTestData.TinyRecipe(runDir, domains, steps) with
        {
            SeqLen = SeqLen, MicroBatch = MicroBatch, GradAccum = null, GlobalBatchTokens = (long)SeqLen * GlobalSequences,
            // Per rank: 1 batch of 2 on each of 2 ranks covers the same 4 held-out samples as 2 batches on 1 rank.
            Eval = new EvalSection { Interval = 30, Batches = 1 },
        };

    [Fact]
    public void TwoRanksTrainLikeOneRankOnTheSameGlobalBatch()
    {
        Assert.True(run.ExitCode == 0, $"launch exited {run.ExitCode}:\n{run.Output}");
        var single = TrainerHarness.Train(run.Config with
        {
            RunDir = run.Tmp["one"], Tensorboard = false, Checkpoint = run.Config.Checkpoint with { SaveFinal = true },
        });
        Assert.Equal(TwoRankRun.Steps, single.Step);

        var expected = TrainerHarness.TrainLosses(run.Tmp["one"]);
        var actual = TrainerHarness.TrainLosses(run.Config.RunDir);
        Assert.Equal(expected.Keys, actual.Keys);
        foreach (var (step, loss) in expected)
            Assert.True(Math.Abs(actual[step] - loss) <= 1e-5 * Math.Abs(loss), $"step {step}: 2 ranks {actual[step]}, 1 rank {loss}");
        Assert.True(expected[TwoRankRun.Steps] < expected[1] - 0.5, "the run should learn: " + string.Join(", ", expected.Values));

        // Held-out loss: every rank evaluates its share (the odd set with a padding forward on rank 1), the sums are reduced.
        var expectedEval = LaunchedRun.EvalLosses(run.Tmp["one"]);
        var actualEval = LaunchedRun.EvalLosses(run.Config.RunDir);
        Assert.Equal(expectedEval.Keys, actualEval.Keys);
        Assert.Equal(6, expectedEval.Count); // alpha and odd at steps 0, 30, 60
        Assert.Contains((30L, "odd"), expectedEval.Keys);
        foreach (var (key, loss) in expectedEval)
            Assert.True(Math.Abs(actualEval[key] - loss) <= 1e-5 * Math.Abs(loss), $"eval {key}: 2 ranks {actualEval[key]}, 1 rank {loss}");
    }

    [Fact]
    public void OnlyRankZeroWritesTheRunFilesAndEveryLogLineNamesItsRank()
    {
        Assert.True(run.ExitCode == 0, $"launch exited {run.ExitCode}:\n{run.Output}");
        string dir = run.Config.RunDir;
        // One writer: every step exactly once (two writers would duplicate or interleave lines).
        var steps = File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Where(l => l.Contains("\"kind\":\"train\"", StringComparison.Ordinal))
            .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64()).ToList();
        Assert.Equal(Enumerable.Range(1, TwoRankRun.Steps).Select(i => (long)i), steps);
        Assert.Single(Directory.GetFiles(Path.Combine(dir, "tensorboard"), "*", SearchOption.AllDirectories));
        Assert.True(File.Exists(Path.Combine(dir, "train_config.json")));

        // Per-rank JSON logs, each event stamped with its rank.
        var rank0 = File.ReadAllLines(Path.Combine(dir, "logs", "pretrain.jsonl"));
        var rank1 = File.ReadAllLines(Path.Combine(dir, "logs", "pretrain.rank1.jsonl"));
        Assert.NotEmpty(rank0);
        Assert.NotEmpty(rank1);
        Assert.All(rank0, l => Assert.Equal(0, JsonDocument.Parse(l).RootElement.GetProperty("Rank").GetInt32()));
        Assert.All(rank1, l => Assert.Equal(1, JsonDocument.Parse(l).RootElement.GetProperty("Rank").GetInt32()));
        Assert.Equal(2, Directory.GetFiles(Path.Combine(dir, "logs")).Length);

        // Console: the launcher's "[rank r]" prefix and the rank in every log line; step progress from rank 0 only.
        var lines = run.Output.Split('\n');
        Assert.Contains(lines, l => l.StartsWith("[rank 1] [", StringComparison.Ordinal) && l.Contains(" rank 1] Rank 1 of 2 joined the job (tcp backend)", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("[rank 0] [", StringComparison.Ordinal) && l.Contains($" rank 0] Step {TwoRankRun.Steps}/{TwoRankRun.Steps} loss", StringComparison.Ordinal));
        Assert.DoesNotContain(lines, l => l.StartsWith("[rank 1]", StringComparison.Ordinal) && l.Contains("] Step ", StringComparison.Ordinal));
        Assert.All(lines.Where(l => l.StartsWith("[rank 1] [", StringComparison.Ordinal)), l => Assert.Contains(" rank 1] ", l));
        Assert.Contains("full_shard over 2 ranks (tcp)", run.Output);
    }

    [Fact]
    public void KillingOneRankFailsTheJobWithinTheTimeoutNamingTheRank()
    {
        using var tmp = new TempDir();
        var config = Recipe(tmp["run"], TrainTestData.TwoDomains(tmp.Path), steps: 100_000);
        using var launch = new LaunchedRun(2, LaunchedRun.WriteRecipe(config, tmp["run.json"]));
        var pids = launch.RankPids(TimeSpan.FromSeconds(60));
        launch.WaitForSteps(config.RunDir, 3, TimeSpan.FromSeconds(120));

        var clock = Stopwatch.StartNew();
        Assert.Equal(0, kill(pids[1], 9)); // SIGKILL: no handler, no goodbye
        int? code = launch.WaitForExit(TimeSpan.FromSeconds(60));
        Assert.True(code is not null, "launch still running 60 s after a rank was killed:\n" + launch.Output);
        Assert.NotEqual(0, code);
        Assert.NotEqual(75, code);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(40), $"took {clock.Elapsed}");
        Assert.Contains("Rank 1 (pid", launch.Output);
        Assert.Contains("killed by SIGKILL", launch.Output);
        // The survivor learned from the store which rank died (long before the 60 s collective timeout), or was told by the launcher.
        var rank0 = launch.Output.Split('\n').Where(l => l.StartsWith("[rank 0]", StringComparison.Ordinal)).ToList();
        Assert.Contains(rank0, l => l.Contains("rank 1", StringComparison.Ordinal) && (l.Contains("Collectives failed", StringComparison.Ordinal) || l.Contains("SIGTERM", StringComparison.Ordinal)));
    }

    [GeneratedRegex(@"^\[rank (\d)\] .*Received SIGUSR1( \(on another rank\))?: saving at step (\d+) ")]
    private static partial Regex StopLine();

    /// <summary>
    /// The stop decision alone (what happens next, the save, is the engine's part and is checked by the test below):
    /// a signal that reaches one rank stops both at the same step, the other rank saying it came from elsewhere.
    /// </summary>
    [Fact]
    public void SignalToOneRankStopsBothRanksAtTheSameStep()
    {
        using var tmp = new TempDir();
        var config = Recipe(tmp["run"], TrainTestData.TwoDomains(tmp.Path), steps: 100_000);
        using var launch = new LaunchedRun(2, LaunchedRun.WriteRecipe(config, tmp["run.json"]));
        var pids = launch.RankPids(TimeSpan.FromSeconds(60));
        launch.WaitForSteps(config.RunDir, 3, TimeSpan.FromSeconds(120));
        Assert.Equal(0, kill(pids[1], 10)); // SIGUSR1 to rank 1 only
        Assert.NotNull(launch.WaitForExit(TimeSpan.FromSeconds(60)));
        var stops = launch.Output.Split('\n').Select(l => StopLine().Match(l)).Where(m => m.Success)
            .ToDictionary(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), m => (Relayed: m.Groups[2].Success, Step: long.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture)));
        Assert.True(stops.Count == 2, "both ranks should report the stop:\n" + launch.Output);
        Assert.False(stops[1].Relayed);
        Assert.True(stops[0].Relayed);
        Assert.Equal(stops[1].Step, stops[0].Step);
        Assert.True(stops[0].Step >= 3 && stops[0].Step < 100_000);
    }

    /// <summary>
    /// Launches the 2-rank reference recipe in <paramref name="tmp"/>, sends <paramref name="signal"/> to one rank after step 3
    /// and checks that the whole job saved and exited 75. Returns the recipe, its file and the launcher's output.
    /// </summary>
    (TrainConfig Config, string Recipe, string Output) PreemptOneRank(TempDir tmp, int rank, int signal)
    {
        Assert.True(run.ExitCode == 0, $"reference launch exited {run.ExitCode}:\n{run.Output}");
        var config = Recipe(tmp["run"], run.Domains);
        string recipe = LaunchedRun.WriteRecipe(config, tmp["run.json"]);
        using var launch = new LaunchedRun(2, recipe);
        var pids = launch.RankPids(TimeSpan.FromSeconds(60));
        launch.WaitForSteps(config.RunDir, 3, TimeSpan.FromSeconds(120));
        Assert.Equal(0, kill(pids[rank], signal));
        Assert.True(launch.WaitForExit(TimeSpan.FromSeconds(60)) == 75, "expected exit 75:\n" + launch.Output);
        return (config, recipe, launch.Output);
    }

    /// <summary>Exercises the engine's sharded <see cref="ITrainStep.SaveState"/>/<see cref="ITrainStep.LoadState"/> through the real binary.</summary>
    [Fact]
    public void SignalToOneRankSavesOnBothAndExits75ThenResumeMatchesTheUninterruptedRun()
    {
        using var tmp = new TempDir();
        var (config, recipe, output) = PreemptOneRank(tmp, rank: 1, signal: 10); // SIGUSR1 to rank 1 only (as a per-task Slurm signal would)
        Assert.Contains(output.Split('\n'), l => l.StartsWith("[rank 0]", StringComparison.Ordinal) && l.Contains("Received SIGUSR1 (on another rank)", StringComparison.Ordinal));
        var store = new CheckpointStore(config.RunDir);
        var saved = store.FindLatestGood(out var skipped);
        Assert.NotNull(saved);
        Assert.Empty(skipped);
        Assert.InRange(saved.Step, 3, TwoRankRun.Steps - 1);
        string state = File.ReadAllText(Path.Combine(saved.Dir, CheckpointFiles.TrainerState));
        Assert.Contains("preempted-sigusr1", state);
        Assert.Contains("\"world_size\": 2", state);
        var manifest = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(saved.Dir, CheckpointStore.ManifestName)), CheckpointManifestJson.Default.CheckpointManifest)!;
        Assert.Equal(2, manifest.WorldSize);
        // Engine contract: rank 0 writes sharding.json, each rank its own shard file(s), no consolidated model.safetensors;
        // the manifest lists them all besides rank 0's four metadata files.
        Assert.Contains("sharding.json", manifest.Files.Keys);
        Assert.DoesNotContain(CheckpointFiles.Model, manifest.Files.Keys);
        Assert.True(manifest.Files.Count >= 4 + 1 + 2, "manifest lists " + string.Join(", ", manifest.Files.Keys));

        using (var launch = new LaunchedRun(2, recipe))
            Assert.True(launch.WaitForExit(TimeSpan.FromSeconds(180)) == 0, "resumed launch failed:\n" + launch.Output);
        Assert.Equal(TwoRankRun.Steps, new CheckpointStore(config.RunDir).FindLatestGood(out _)!.Step);
        // Same world size, same reductions: the resumed run is bit-identical to the uninterrupted one.
        Assert.Equal(TrainerHarness.TrainLosses(run.Config.RunDir), TrainerHarness.TrainLosses(config.RunDir));
    }
    /// <summary>
    /// Each rank checks its own slice files against the manifest as it loads them (no hashing pass first): a flipped byte
    /// in rank 1's optimizer slice of the newest checkpoint makes both ranks reject it together, resume from the previous
    /// one and end bit-identical to the run that saved them.
    /// </summary>
    [Fact]
    public void AFlippedByteInOneRanksSliceFileMakesBothRanksFallBackTogether()
    {
        using var tmp = new TempDir();
        var config = Recipe(tmp["run"], run.Domains, steps: 6) with { Checkpoint = new CheckpointSection { Interval = 3, KeepLast = 5, SaveFinal = true } };
        string recipe = LaunchedRun.WriteRecipe(config, tmp["run.json"]);
        using (var first = new LaunchedRun(2, recipe))
            Assert.True(first.WaitForExit(TimeSpan.FromSeconds(180)) == 0, "first launch failed:\n" + first.Output);
        var before = TrainerHarness.TrainLosses(config.RunDir);
        string newest = new CheckpointStore(config.RunDir).FindLatestGood(out _)!.Dir;
        Assert.EndsWith(CheckpointStore.DirName(6), newest);
        string victim = Engine.Sharded.ShardedCheckpoint.OptimizerShardFile(1, 2);
        using (var fs = new FileStream(Path.Combine(newest, victim), FileMode.Open, FileAccess.ReadWrite))
        {
            fs.Position = fs.Length - 5;
            int b = fs.ReadByte();
            fs.Position = fs.Length - 5;
            fs.WriteByte((byte)(b ^ 0x01));
        }

        using (var again = new LaunchedRun(2, recipe))
        {
            Assert.True(again.WaitForExit(TimeSpan.FromSeconds(180)) == 0, "resumed launch failed:\n" + again.Output);
            var lines = again.Output.Split('\n');
            Assert.Contains(lines, l => l.StartsWith("[rank 1]", StringComparison.Ordinal) && l.Contains($"{victim} fails its xxh128 checksum", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.StartsWith("[rank 0]", StringComparison.Ordinal) && l.Contains("a slice file failed its checksum on another rank; starting over from an older one", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.StartsWith("[rank 0]", StringComparison.Ordinal) && l.Contains("Resuming from", StringComparison.Ordinal) && l.Contains(CheckpointStore.DirName(3), StringComparison.Ordinal));
        }
        Assert.Equal(before, TrainerHarness.TrainLosses(config.RunDir));
        Assert.True(CheckpointStore.Check(newest).Ok, "step 6 is saved again, intact");
    }

    /// <summary>
    /// A checkpoint saved by 2 ranks continues on 1 process (which then uses the sharded engine to read the shards) with
    /// the losses of the uninterrupted 2-rank run (fp32, within 1e-5 relative).
    /// </summary>
    [Fact]
    public void SavedOnTwoRanksResumesOnOneProcessWithTheSameLosses()
    {
        using var tmp = new TempDir();
        var (config, recipe, _) = PreemptOneRank(tmp, rank: 0, signal: 15); // SIGTERM to rank 0 only
        long savedAt = new CheckpointStore(config.RunDir).FindLatestGood(out _)!.Step;

        using (var single = new LaunchedRun(1, recipe)) // world size 1: an ordinary single process
        {
            Assert.True(single.WaitForExit(TimeSpan.FromSeconds(180)) == 0, "1-process resume failed:\n" + single.Output);
            Assert.Contains("is sharded: continuing with the sharded engine on one rank", single.Output);
        }
        var expected = TrainerHarness.TrainLosses(run.Config.RunDir);
        var actual = TrainerHarness.TrainLosses(config.RunDir);
        Assert.Equal(expected.Keys, actual.Keys);
        foreach (var (step, loss) in expected)
            Assert.True(Math.Abs(actual[step] - loss) <= 1e-5 * Math.Abs(loss), $"step {step} (saved at {savedAt}): resumed {actual[step]}, uninterrupted {loss}");
    }
}

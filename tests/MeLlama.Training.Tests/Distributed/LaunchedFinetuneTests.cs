using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using MeLlama.Training.Export;
using MeLlama.Training.Finetune.Config;
using MeLlama.Training.Finetune.Loop;
using MeLlama.Training.Loop;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests.Distributed;

/// <summary>
/// `mellama launch --nproc N -- finetune` with the real binary: method full trains with the sharded engine and matches one
/// process on the same global batch, its sharded checkpoints resume on another number of ranks and export to one HF
/// folder; LoRA trains data parallel and matches one process, its checkpoints resuming on one process.
/// </summary>
public sealed partial class LaunchedFinetuneTests
{
    [System.Runtime.InteropServices.LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);

    const int Steps = 8;
    const string Secret = "Patient 3 has a heart rate of 81";

    static string WriteData(string path)
    {
        // Replies of different lengths, so the ranks' blocks hold different numbers of assistant tokens.
        File.WriteAllLines(path, Enumerable.Range(0, 12).Select(i =>
            $$"""{"instruction": "Patient {{i}} has a heart rate of {{60 + 7 * i}}. Classify it.", "output": "{{(60 + 7 * i > 100 ? "Tachycardia, a fast heart rate that needs a closer look" : "Normal")}} (rate {{60 + 7 * i}})."}"""));
        return path;
    }

    /// <summary>The demo recipe shrunk: 4 rows per step (micro_batch 2 × grad_accum 2), 3 ranks get blocks of 1, 1 and 2 rows.</summary>
    static string[] Overrides(string runDir, string data, string method = "full", string strategy = "full_shard") =>
    [
        $"run_dir={runDir}", $"data.train=[\"{data}\"]", $"method={method}", $"parallel.strategy={strategy}",
        "model.arch.hidden_size=32", "model.arch.num_hidden_layers=2", "model.arch.num_attention_heads=2", "model.arch.num_key_value_heads=1",
        "model.arch.intermediate_size=64", "model.arch.max_position_embeddings=64",
        "seq_len=47", "pack=false", "micro_batch=2", "grad_accum=2", $"max_steps={Steps}", "threads=1", "device=cpu", "optimizer.lr=0.003",
        "eval.interval=4", "eval.batches=4", "checkpoint.interval=4", "checkpoint.keep_last=3", "tensorboard=false", "data.eval_fraction=0.25",
    ];

    static string[] Launch(string runDir, string data, string method = "full") =>
        ["finetune", "--config", "demo", .. Overrides(runDir, data, method).SelectMany(o => new[] { "--set", o })];

    static void AssertSameLosses(SortedDictionary<long, double> expected, SortedDictionary<long, double> actual, string what, double tolerance = 1e-5)
    {
        Assert.Equal(expected.Keys, actual.Keys);
        foreach (var (step, loss) in expected)
            Assert.True(Math.Abs(actual[step] - loss) <= tolerance * Math.Abs(loss), $"{what} step {step}: {actual[step]:R} vs one process {loss:R}");
    }

    static string RunLaunched(int ranks, string[] command)
    {
        using var launch = new LaunchedRun(ranks, command);
        int? code = launch.WaitForExit(TimeSpan.FromSeconds(240));
        Assert.True(code == 0, $"launch exited {code?.ToString() ?? "(still running)"}:\n{launch.Output}");
        Assert.DoesNotContain(Secret, launch.Output);
        Assert.Contains($"full_shard over {ranks} rank(s)", launch.Output);
        return launch.Output;
    }

    [Fact]
    public void FullFineTuneOnTwoRanksMatchesOneProcessResumesOnOtherRankCountsAndExports()
    {
        using var tmp = new TempDir();
        string data = WriteData(tmp["instructions.jsonl"]);
        Finetune.FinetuneTestSupport.SingleThread();

        // One process (the one-process engine) over the same global batches.
        var one = new FinetuneTrainer(FinetuneConfigLoader.Load("demo", Overrides(tmp["one"], data)), new FinetuneOptions()).Run();
        Assert.Equal(TrainEnd.Completed, one.End);
        var expected = TrainerHarness.TrainLosses(tmp["one"]);
        var expectedEval = LaunchedRun.EvalLosses(tmp["one"]);
        Assert.Equal(Steps, expected.Count);
        Assert.Equal(3, expectedEval.Count); // steps 0, 4, 8

        // Two ranks, full shard.
        string two = tmp["two"];
        string twoOutput = RunLaunched(2, Launch(two, data));
        Assert.DoesNotContain(twoOutput.Split('\n'), l => l.StartsWith("[rank 1]", StringComparison.Ordinal) && l.Contains("] Step ", StringComparison.Ordinal));
        AssertSameLosses(expected, TrainerHarness.TrainLosses(two), "2 ranks");
        var eval = LaunchedRun.EvalLosses(two);
        Assert.Equal(expectedEval.Keys, eval.Keys);
        foreach (var (key, loss) in expectedEval) Assert.True(Math.Abs(eval[key] - loss) <= 1e-5 * loss, $"eval {key}: {eval[key]} vs {loss}");
        var store = new CheckpointStore(two);
        var saved = store.List();
        Assert.Equal([4L, 8L], saved.Select(c => c.Step).Order());
        Assert.All(saved, c => Assert.True(ShardedCheckpoint.IsSharded(c.Dir), $"{c.Dir} should be sharded"));
        Assert.True(File.Exists(Path.Combine(two, "logs", "finetune.rank1.jsonl")), "rank 1 logs to its own file");
        Assert.Single(File.ReadAllLines(Path.Combine(two, "metrics.jsonl")), l => l.Contains("\"step\":8,", StringComparison.Ordinal) && l.Contains("\"kind\":\"train\"", StringComparison.Ordinal));

        // The step-4 checkpoint of 2 ranks continued on 1 process (sharded engine on one rank) and on 3 ranks (uneven blocks).
        foreach (var (name, ranks) in new[] { ("on-one", 1), ("on-three", 3) })
        {
            string dir = tmp[name];
            CopyRunUpTo(two, dir, step: 4);
            if (ranks == 1)
            {
                long firstStep = 0;
                var resumed = new FinetuneTrainer(FinetuneConfigLoader.Load("demo", Overrides(dir, data)),
                    new FinetuneOptions { AfterStep = s => { if (firstStep == 0) firstStep = s; } }).Run();
                Assert.Equal(TrainEnd.Completed, resumed.End);
                Assert.Equal(5, firstStep); // continued after step 4, not started over
            }
            else Assert.Contains("Resuming from ", RunLaunched(ranks, Launch(dir, data)));
            AssertSameLosses(expected, TrainerHarness.TrainLosses(dir), $"resumed {name}");
        }

        // The other way: the one-process run's step-4 checkpoint (model.safetensors + optimizer.safetensors) continued on 2
        // in-process ranks, each reading its part of it.
        string oneOnTwo = tmp["one-on-two"];
        CopyRunUpTo(tmp["one"], oneOnTwo, step: 4);
        var firstSteps = new long[2];
        Sharded.InProcessRanks.Run(2, comm =>
        {
            using var w = TrainingWorld.Of(comm);
            var outcome = new FinetuneTrainer(FinetuneConfigLoader.Load("demo", Overrides(oneOnTwo, data)),
                new FinetuneOptions { World = w, AfterStep = s => { if (firstSteps[comm.Rank] == 0) firstSteps[comm.Rank] = s; } }).Run();
            Assert.Equal(TrainEnd.Completed, outcome.End);
        });
        Assert.Equal([5L, 5L], firstSteps);
        AssertSameLosses(expected, TrainerHarness.TrainLosses(oneOnTwo), "one-process checkpoint resumed on 2 ranks");

        // `mellama export` of the run folder consolidates the slices into one HF folder equal to the one-process weights.
        string exported = FinetuneExporter.Export(two, tmp["hf"], ScalarType.Float32, AdapterExportMode.Merge);
        using var model = HfCheckpoint.LoadModel(exported);
        var reference = HfExporter.ReadWeights(new CheckpointStore(tmp["one"]).List().MaxBy(c => c.Step)!.Dir).ToDictionary(w => w.Name, w => w.Tensor);
        foreach (var (name, p) in model.named_parameters())
        {
            double diff = (p - reference[name]).norm().item<float>(), norm = reference[name].norm().item<float>();
            Assert.True(diff <= 1e-5 * norm, $"{name}: ‖Δ‖/‖w‖ = {diff / norm:E2}");
        }
        Assert.True(File.Exists(Path.Combine(exported, "tokenizer_config.json")) || Directory.GetFiles(exported, "tokenizer*").Length > 0, "the export carries the tokenizer");
    }

    /// <summary>
    /// SIGUSR1 to rank 1 only (as a per-task Slurm signal): both ranks stop at the same step, write one sharded checkpoint
    /// together and the job exits 75; run again, it continues from there to the end.
    /// </summary>
    [Fact]
    public void SignalToOneRankSavesBothAndExits75ThenTheRunContinues()
    {
        using var tmp = new TempDir();
        string data = WriteData(tmp["instructions.jsonl"]);
        string runDir = tmp["run"];
        string[] command = [.. Launch(runDir, data), "--set", "max_steps=100000", "--set", "checkpoint.interval=100000", "--set", "eval.interval=0"];
        using (var launch = new LaunchedRun(2, command))
        {
            var pids = launch.RankPids(TimeSpan.FromSeconds(60));
            launch.WaitForSteps(runDir, 3, TimeSpan.FromSeconds(120));
            Assert.Equal(0, kill(pids[1], 10));
            Assert.True(launch.WaitForExit(TimeSpan.FromSeconds(60)) == 75, "expected exit 75:\n" + launch.Output);
            var lines = launch.Output.Split('\n');
            Assert.Contains(lines, l => l.StartsWith("[rank 0]", StringComparison.Ordinal) && l.Contains("Received SIGUSR1 (on another rank): saving at step ", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.StartsWith("[rank 1]", StringComparison.Ordinal) && l.Contains("Received SIGUSR1: saving at step ", StringComparison.Ordinal));
            Assert.DoesNotContain(Secret, launch.Output);
        }
        var saved = Assert.Single(new CheckpointStore(runDir).List());
        Assert.True(saved.Step >= 3, $"saved at step {saved.Step}");
        Assert.True(ShardedCheckpoint.IsSharded(saved.Dir));
        Assert.True(CheckpointStore.Check(saved.Dir, full: true).Ok);
        // Continue to a near end: the run picks up at the saved step.
        string output = RunLaunched(2, [.. Launch(runDir, data), "--set", $"max_steps={saved.Step + 2}", "--set", "eval.interval=0"]);
        Assert.Contains("Resuming from ", output);
        Assert.Equal(Enumerable.Range(1, (int)saved.Step + 2).Select(i => (long)i), TrainerHarness.TrainLosses(runDir).Keys);
    }

    /// <summary>A copy of <paramref name="from"/> with only its checkpoints up to <paramref name="step"/> (as if stopped there).</summary>
    static void CopyRunUpTo(string from, string to, long step)
    {
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
        {
            string rel = Path.GetRelativePath(from, file);
            if (rel == Path.Combine("checkpoints", CheckpointStore.LatestName)) continue; // names the newest, left out here
            if (new CheckpointStore(from).List().Any(c => c.Step > step && file.StartsWith(c.Dir + Path.DirectorySeparatorChar, StringComparison.Ordinal))) continue;
            string target = Path.Combine(to, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }

    /// <summary>
    /// LoRA over 2 launched ranks is data parallel: the same losses and evals as one process (dropout off: the ranks draw
    /// their own masks), one-process checkpoints written by rank 0 alone, and the step-3 one continues on 1 process; the
    /// one-process run's step-3 checkpoint continues on 2 ranks.
    /// </summary>
    [Fact]
    public void LoraOnTwoRanksMatchesOneProcessAndItsCheckpointResumesOnOne()
    {
        using var tmp = new TempDir();
        string data = WriteData(tmp["instructions.jsonl"]);
        Finetune.FinetuneTestSupport.SingleThread();
        string[] lora = ["lora.dropout=0", "max_steps=6", "checkpoint.interval=3", "eval.interval=3"];
        string[] Config(string dir) => [.. Overrides(dir, data, method: "lora"), .. lora];

        var one = new FinetuneTrainer(FinetuneConfigLoader.Load("demo", Config(tmp["one"])), new FinetuneOptions()).Run();
        Assert.Equal(TrainEnd.Completed, one.End);
        var expected = TrainerHarness.TrainLosses(tmp["one"]);
        var expectedEval = LaunchedRun.EvalLosses(tmp["one"]);
        Assert.Equal(6, expected.Count);
        Assert.Equal(3, expectedEval.Count); // steps 0, 3, 6

        string two = tmp["two"];
        using (var launch = new LaunchedRun(2, ["finetune", "--config", "demo", .. Config(two).SelectMany(o => new[] { "--set", o })]))
        {
            int? code = launch.WaitForExit(TimeSpan.FromSeconds(240));
            Assert.True(code == 0, $"launch exited {code?.ToString() ?? "(still running)"}:\n{launch.Output}");
            Assert.Contains("LoRA data parallel over 2 ranks", launch.Output);
            Assert.DoesNotContain(Secret, launch.Output);
        }
        AssertSameLosses(expected, TrainerHarness.TrainLosses(two), "LoRA on 2 ranks");
        var eval = LaunchedRun.EvalLosses(two);
        Assert.Equal(expectedEval.Keys, eval.Keys);
        foreach (var (key, loss) in expectedEval) Assert.True(Math.Abs(eval[key] - loss) <= 1e-5 * loss, $"eval {key}: {eval[key]} vs {loss}");
        var saved = new CheckpointStore(two).List();
        Assert.Equal([3L, 6L], saved.Select(c => c.Step).Order());
        foreach (var c in saved)
        {
            Assert.False(ShardedCheckpoint.IsSharded(c.Dir), $"{c.Dir} should be a one-process checkpoint");
            // The same files as one process writes: rank 1 wrote nothing of its own.
            var oneDir = new CheckpointStore(tmp["one"]).List().Single(o => o.Step == c.Step).Dir;
            Assert.Equal(Directory.GetFiles(oneDir).Select(Path.GetFileName).Order(), Directory.GetFiles(c.Dir).Select(Path.GetFileName).Order());
        }

        string onOne = tmp["on-one"];
        CopyRunUpTo(two, onOne, step: 3);
        long firstStep = 0;
        var resumed = new FinetuneTrainer(FinetuneConfigLoader.Load("demo", Config(onOne)),
            new FinetuneOptions { AfterStep = s => { if (firstStep == 0) firstStep = s; } }).Run();
        Assert.Equal(TrainEnd.Completed, resumed.End);
        Assert.Equal(4, firstStep);
        AssertSameLosses(expected, TrainerHarness.TrainLosses(onOne), "2-rank LoRA checkpoint resumed on 1 process");

        // The one-process run's step-3 checkpoint continued on 2 in-process ranks: every rank resumes from it.
        string oneOnTwo = tmp["one-on-two"];
        CopyRunUpTo(tmp["one"], oneOnTwo, step: 3);
        var firstSteps = new long[2];
        Sharded.InProcessRanks.Run(2, comm =>
        {
            using var w = TrainingWorld.Of(comm);
            var outcome = new FinetuneTrainer(FinetuneConfigLoader.Load("demo", Config(oneOnTwo)),
                new FinetuneOptions { World = w, AfterStep = s => { if (firstSteps[comm.Rank] == 0) firstSteps[comm.Rank] = s; } }).Run();
            Assert.Equal(TrainEnd.Completed, outcome.End);
        });
        Assert.Equal([4L, 4L], firstSteps);
        AssertSameLosses(expected, TrainerHarness.TrainLosses(oneOnTwo), "one-process LoRA checkpoint resumed on 2 ranks");
    }
}

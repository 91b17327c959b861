using System.Diagnostics;
using System.Runtime.InteropServices;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Loop;
using MeLlama.Training.Metrics;
using MeLlama.TestSupport;

namespace MeLlama.Training.Tests;

/// <summary>The real `mellama pretrain` process under SIGUSR1/SIGTERM and kill -9.</summary>
public sealed partial class PreemptionTests
{
    const int Steps = 60;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);

    internal static string MellamaDll()
    {
        // tests/MeLlama.Training.Tests/bin/<Configuration>/net10.0/ → src/MeLlama.Cli/bin/<Configuration>/net10.0/mellama.dll
        string configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
        string dll = Path.Combine(SharedData.RepoRoot, "src", "MeLlama.Cli", "bin", configuration, "net10.0", "mellama.dll");
        Assert.True(File.Exists(dll), $"{dll} is missing: build src/MeLlama.Cli first");
        return dll;
    }

    static Process Start(string configPath, params string[] extra)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { MellamaDll(), "pretrain", "--config", configPath }.Concat(extra)) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        p.ErrorDataReceived += (_, _) => { };
        p.OutputDataReceived += (_, _) => { };
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        return p;
    }

    static void WaitUntil(Func<bool> condition, Process p, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.False(p.HasExited, $"process exited (code {(p.HasExited ? p.ExitCode : 0)}) before {what}");
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(120), $"timed out waiting for {what}");
            Thread.Sleep(20);
        }
    }

    static int TrainLines(string runDir)
    {
        string path = Path.Combine(runDir, "metrics.jsonl");
        if (!File.Exists(path)) return 0;
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using var reader = new StreamReader(fs);
        return reader.ReadToEnd().Split('\n').Count(l => l.Contains("\"kind\":\"train\""));
    }

    static (TrainConfig Config, string Path) WriteRecipe(TempDir tmp, string name, List<DomainSource> domains, int checkpointInterval)
    {
        var config = TrainTestData.TinyRecipe(tmp[name], domains, Steps) with { Checkpoint = new() { Interval = checkpointInterval, KeepLast = 3 }, Eval = new() { Interval = 25, Batches = 1 } };
        string path = tmp[name + ".json"];
        File.WriteAllText(path, ConfigLoader.ToJson(config));
        return (config, path);
    }

    [Theory]
    [InlineData(10, "SIGUSR1")]
    [InlineData(15, "SIGTERM")]
    public void SignalSavesExitsWith75AndASecondRunContinuesToTheSameWeights(int signal, string name)
    {
        using var tmp = new TempDir();
        var domains = TrainTestData.TwoDomains(tmp.Path);
        var (config, recipe) = WriteRecipe(tmp, "run", domains, checkpointInterval: 1000);

        using (var p = Start(recipe))
        {
            WaitUntil(() => TrainLines(config.RunDir) >= 3, p, "3 training steps");
            Assert.Equal(0, kill(p.Id, signal));
            Assert.True(p.WaitForExit(60_000), "process did not exit after the signal");
            Assert.Equal(75, p.ExitCode);
        }
        var saved = new CheckpointStore(config.RunDir).FindLatestGood(out _)!;
        Assert.InRange(saved.Step, 3, Steps - 1);
        Assert.Contains("preempted-" + name.ToLowerInvariant(), File.ReadAllText(Path.Combine(saved.Dir, CheckpointFiles.TrainerState)));

        using (var p = Start(recipe))
        {
            Assert.True(p.WaitForExit(120_000));
            Assert.Equal(0, p.ExitCode);
        }
        var final = new CheckpointStore(config.RunDir).FindLatestGood(out _)!;
        Assert.Equal(Steps, final.Step);

        var straight = TrainerHarness.Train(config with { RunDir = tmp["straight"] });
        Assert.Equal(TrainerHarness.ModelSha(straight.Checkpoint!), TrainerHarness.ModelSha(final.Dir));
        Assert.Equal(TrainerHarness.TrainLosses(tmp["straight"]), TrainerHarness.TrainLosses(config.RunDir));
    }

    [Fact]
    public void KillDashNineMidRunLosesOnlyTheStepsSinceTheLastCheckpoint()
    {
        using var tmp = new TempDir();
        var domains = TrainTestData.TwoDomains(tmp.Path);
        var (config, recipe) = WriteRecipe(tmp, "run", domains, checkpointInterval: 7);
        var store = new CheckpointStore(config.RunDir);

        using (var p = Start(recipe))
        {
            WaitUntil(() => store.List().Any(c => c.Step >= 14), p, "checkpoint 14");
            p.Kill(); // SIGKILL: no handler runs, possibly mid-step or mid-save
            p.WaitForExit();
        }
        long before = store.FindLatestGood(out _)!.Step;
        Assert.True(before >= 14);

        using (var p = Start(recipe))
        {
            Assert.True(p.WaitForExit(120_000));
            Assert.Equal(0, p.ExitCode);
        }
        var straight = TrainerHarness.Train(config with { RunDir = tmp["straight"] });
        Assert.Equal(TrainerHarness.ModelSha(straight.Checkpoint!), TrainerHarness.ModelSha(store.FindLatestGood(out _)!.Dir));
        Assert.Equal(TrainerHarness.TrainLosses(tmp["straight"]), TrainerHarness.TrainLosses(config.RunDir));
    }
}

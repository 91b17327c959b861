using MeLlama.TestSupport;

namespace MeLlama.Training.Tests.Distributed;

/// <summary>
/// Fine-tuning runs on one process: started as several ranks (launch, torchrun, srun with several tasks) it must not
/// let every rank train the same model into the same run folder. Each rank refuses with exit 2 before writing anything.
/// </summary>
public sealed class LaunchedFinetuneTests
{
    [Fact]
    public void FinetuneStartedAsTwoRanksRefusesOnEveryRankAndWritesNothing()
    {
        using var tmp = new TempDir();
        string runDir = tmp["run"];
        string data = tmp["instructions.jsonl"];
        File.WriteAllText(data, "{\"instruction\": \"Name a vitamin.\", \"output\": \"Vitamin C.\"}\n");
        using var launch = new LaunchedRun(2, ["finetune", "--config", "demo", "--data", data, "--set", $"run_dir={runDir}"]);
        int? code = launch.WaitForExit(TimeSpan.FromSeconds(120));
        Assert.True(code is not null, "launch still running:\n" + launch.Output);
        Assert.NotEqual(0, code);
        // The launcher stops the job when the first rank exits, so at least one rank (either) says why.
        Assert.Contains(launch.Output.Split('\n'), l => l.StartsWith("[rank ", StringComparison.Ordinal)
            && l.Contains("finetune runs on one process, but this one is rank ", StringComparison.Ordinal) && l.Contains(" of 2 (RANK/WORLD_SIZE variables)", StringComparison.Ordinal));
        Assert.False(Directory.Exists(Path.Combine(runDir, "checkpoints")), "no rank may start writing the run folder");
    }
}

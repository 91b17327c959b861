using System.Diagnostics;
using System.Globalization;
using MeLlama.Distributed.Launch;

namespace MeLlama.Distributed.Tests;

/// <summary>
/// Real processes of the real `mellama` binary: `launch` end to end, and ranks started by hand (as srun
/// would) of which one is killed or frozen. These take a few seconds each (process and libtorch start-up).
/// </summary>
[Collection("processes")] // one at a time: they are heavy for a 2-core CI machine
public class ProcessTests
{
    static readonly TimeSpan Startup = TimeSpan.FromSeconds(120); // generous: CI machines can be busy
    static readonly string[] SelfTest = ["collectives-selftest", "--sizes", "64K", "--iterations", "1", "--warmup", "0"];

    [Fact]
    public void LaunchRunsRanksThatAgreeAndLabelsTheirOutput()
    {
        using var launch = new MellamaProcess(["launch", "--nproc", "2", "--", .. SelfTest, "--dtypes", "float32,bfloat16"]);
        Assert.True(launch.WaitForExit(Startup) == 0, $"launch failed.\nstdout:\n{launch.Stdout}\nstderr:\n{launch.Stderr}");
        Assert.Contains("[rank 0] # all checks passed", launch.Stdout);
        Assert.Contains("[rank 0] all_reduce sum", launch.Stdout);
        Assert.Contains("[rank 1]", launch.Stderr);
        Assert.Contains("INF rank 1] Rank 1 of 2 ready on the tcp backend", launch.Stderr); // each rank's log names its rank
    }

    [Fact]
    public void LaunchStopsEveryRankWhenOneFailsAndNamesIt()
    {
        var clock = Stopwatch.StartNew();
        using var launch = new MellamaProcess(["launch", "--nproc", "3", "--stop-grace-s", "10", "--", .. SelfTest, "--dtypes", "float32", "--loops", "0", "--fail-rank", "1", "--timeout-s", "300"]);
        Assert.Equal(3, launch.WaitForExit(Startup));
        Assert.Contains("Rank 1", launch.Stderr);
        Assert.Contains("failed with exit code 3", launch.Stderr);
        Assert.Contains("rank 1 exited first", launch.Stderr.Replace("Rank", "rank"));
        // The survivors learned that rank 1 died from the store, long before their 300 s timeout.
        Assert.Contains("rank 1 (host", launch.Stderr);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(100), $"took {clock.Elapsed}");
    }

    [Fact]
    public void LaunchForwardsSignalsAndPassesOnTheRequeueCode()
    {
        using var launch = new MellamaProcess(["launch", "--nproc", "2", "--", .. SelfTest, "--dtypes", "float32", "--loops", "0"]);
        launch.WaitForOutput("[rank 1] rank 1: loop 1 ok", Startup);
        launch.Signal(PosixSignals.SIGUSR1);
        Assert.Equal(LaunchOptions.RequeueExitCode, launch.WaitForExit(TimeSpan.FromSeconds(60)));
        Assert.Contains("Forwarding SIGUSR1 to 2 rank(s)", launch.Stderr);
        Assert.Contains("[rank 0]", launch.Stderr);
        Assert.Contains("Stopped on SIGUSR1", launch.Stderr);
    }

    [Theory]
    [InlineData(1)] // an ordinary rank
    [InlineData(0)] // the rank hosting the store
    public void KillingOneRankMakesTheOtherExitNamingIt(int victim)
    {
        var (a, b) = StartPair(timeoutSeconds: 60);
        using var _ = a;
        using var __ = b;
        var ranks = new[] { a, b };
        a.WaitForOutput("rank 0: loop 1 ok", Startup);
        b.WaitForOutput("rank 1: loop 1 ok", Startup);

        var clock = Stopwatch.StartNew();
        ranks[victim].Kill(); // SIGKILL: no goodbye, no cleanup
        var survivor = ranks[1 - victim];
        int? code = survivor.WaitForExit(TimeSpan.FromSeconds(60));
        Assert.NotNull(code);
        Assert.NotEqual(0, code);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"survivor took {clock.Elapsed} to exit");
        Assert.Contains($"rank {victim}", survivor.Stderr);
        Assert.Contains("Collectives failed", survivor.Stderr);
    }

    [Fact]
    public void FrozenRankMakesTheOtherTimeOutNamingIt()
    {
        var (a, b) = StartPair(timeoutSeconds: 4);
        using var _ = a;
        using var __ = b;
        a.WaitForOutput("rank 0: loop 1 ok", Startup);
        b.WaitForOutput("rank 1: loop 1 ok", Startup);
        b.Signal(19); // SIGSTOP: alive, connected, silent
        try
        {
            var clock = Stopwatch.StartNew();
            int? code = a.WaitForExit(TimeSpan.FromSeconds(60));
            Assert.Equal(1, code);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"took {clock.Elapsed} with a 4 s timeout");
            Assert.Contains("timed out after 4 s", a.Stderr);
            Assert.Contains("rank 1", a.Stderr);
        }
        finally { b.Kill(); }
    }

    static (MellamaProcess Rank0, MellamaProcess Rank1) StartPair(int timeoutSeconds)
    {
        int port = LocalLauncher.FreePort();
        string secret = JobSecret.Generate().EnvironmentValue;
        MellamaProcess Start(int rank) => new([.. SelfTest, "--dtypes", "float32", "--loops", "0", "--timeout-s", timeoutSeconds.ToString(CultureInfo.InvariantCulture)],
            new Dictionary<string, string>
            {
                ["RANK"] = rank.ToString(CultureInfo.InvariantCulture), ["WORLD_SIZE"] = "2", ["LOCAL_RANK"] = rank.ToString(CultureInfo.InvariantCulture),
                ["LOCAL_WORLD_SIZE"] = "2", ["MASTER_ADDR"] = "127.0.0.1", ["MASTER_PORT"] = port.ToString(CultureInfo.InvariantCulture),
                [JobSecret.EnvVar] = secret,
            });
        return (Start(0), Start(1));
    }
}

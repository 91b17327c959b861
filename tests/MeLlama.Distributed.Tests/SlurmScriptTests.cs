using System.Diagnostics;
using MeLlama.TestSupport;

namespace MeLlama.Distributed.Tests;

/// <summary>
/// The sbatch scripts' requeue and signal logic, run by bash with stand-ins for srun, scontrol and mellama
/// (no Slurm here): a clean stop after a checkpoint (exit 75) requeues the job, a failure does not, and the
/// early-warning USR1 reaches the ranks.
/// </summary>
[Collection("processes")]
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public class SlurmScriptTests
{
    sealed class FakeCluster : IDisposable
    {
        public readonly TempDir Dir = new();
        public string Repo => Dir["repo"];
        public string Calls => Dir["calls.log"];

        public FakeCluster(string mellamaBody)
        {
            Directory.CreateDirectory(Path.Combine(Repo, "scripts", "slurm"));
            foreach (var f in Directory.GetFiles(Path.Combine(SharedData.RepoRoot, "scripts", "slurm")))
                File.Copy(f, Path.Combine(Repo, "scripts", "slurm", Path.GetFileName(f)));
            Directory.CreateDirectory(Dir["bin"]);
            Script("bin/scontrol", $"""
                if [[ "$1" == show ]]; then echo node01; echo node02; exit 0; fi
                echo "scontrol $*" >> {Calls}
                """);
            // srun: runs the task, passing USR1/TERM on to it as the real srun does, and returns its exit code.
            Script("bin/srun", $$"""
                while [[ "$1" == --* ]]; do shift; done
                echo "srun $* MELLAMA_JOB_SECRET=${#MELLAMA_JOB_SECRET} MASTER=$MASTER_ADDR:$MASTER_PORT" >> {{Calls}}
                "$@" &
                task=$!
                trap 'kill -USR1 $task' USR1
                trap 'kill -TERM $task' TERM
                while true; do wait $task; rc=$?; kill -0 $task 2>/dev/null || break; done
                exit $rc
                """);
            Script("mellama", mellamaBody);
        }

        void Script(string relative, string body)
        {
            var path = Dir[relative];
            File.WriteAllText(path, "#!/usr/bin/env bash\n" + body.Replace("\r", "") + "\n");
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        public Process Start(string sbatch, int restartCount = 0, string maxRestarts = "50")
        {
            var psi = new ProcessStartInfo("bash", [Path.Combine(Repo, "scripts", "slurm", sbatch)]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            psi.Environment["PATH"] = Dir["bin"] + ":" + Environment.GetEnvironmentVariable("PATH");
            psi.Environment["MELLAMA_REPO"] = Repo;
            psi.Environment["MELLAMA"] = Dir["mellama"];
            psi.Environment["SLURM_JOB_ID"] = "4242";
            psi.Environment["SLURM_JOB_NODELIST"] = "node[01-02]";
            psi.Environment["SLURM_RESTART_COUNT"] = restartCount.ToString(System.Globalization.CultureInfo.InvariantCulture);
            psi.Environment["MAX_RESTARTS"] = maxRestarts;
            psi.Environment.Remove(JobSecret.EnvVar);
            psi.Environment.Remove("MASTER_ADDR");
            psi.Environment.Remove("MASTER_PORT");
            return Process.Start(psi)!;
        }

        public string CallLog => File.Exists(Calls) ? File.ReadAllText(Calls) : "";

        public void Dispose() => Dir.Dispose();
    }

    static (int Code, string Output) Finish(Process p)
    {
        var output = p.StandardOutput.ReadToEndAsync();
        var error = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)), "the sbatch script hung");
        p.WaitForExit();
        return (p.ExitCode, output.Result + error.Result);
    }

    [Fact]
    public void CleanStopAfterCheckpointRequeuesTheJob()
    {
        using var cluster = new FakeCluster("echo \"mellama $*\"; exit 75");
        using var p = cluster.Start("pretrain-13b.sbatch");
        var (code, output) = Finish(p);
        Assert.Equal(75, code);
        Assert.Contains("srun ", cluster.CallLog);
        Assert.Contains("pretrain --config configs/me-llama-13b.json", cluster.CallLog);
        Assert.Contains("MELLAMA_JOB_SECRET=64", cluster.CallLog); // a fresh 32-byte secret, hex
        Assert.Contains($"MASTER=node01:{20000 + 4242}", cluster.CallLog);
        Assert.Contains("scontrol requeue 4242", cluster.CallLog);
        Assert.Contains("requeueing job 4242", output);
    }

    [Fact]
    public void FailureIsNotRequeued()
    {
        using var cluster = new FakeCluster("exit 1");
        using var p = cluster.Start("pretrain-70b.sbatch");
        var (code, _) = Finish(p);
        Assert.Equal(1, code);
        Assert.DoesNotContain("requeue", cluster.CallLog);
    }

    [Fact]
    public void RestartLimitStopsRequeueing()
    {
        using var cluster = new FakeCluster("exit 75");
        using var p = cluster.Start("instruct.sbatch", restartCount: 3, maxRestarts: "3");
        var (code, output) = Finish(p);
        Assert.Equal(75, code);
        Assert.DoesNotContain("requeue", cluster.CallLog);
        Assert.Contains("MAX_RESTARTS=3", output);
    }

    [Fact]
    public void EarlyWarningSignalReachesTheRanksWhichSaveAndGetRequeued()
    {
        // A rank that trains until USR1, then "saves" and exits 75, like `mellama pretrain`.
        using var cluster = new FakeCluster("""
            trap 'echo "rank got USR1, saving"; exit 75' USR1
            echo ready > "$MELLAMA_REPO/ready"
            while true; do sleep 0.1; done
            """);
        using var p = cluster.Start("pretrain-13b.sbatch");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!File.Exists(Path.Combine(cluster.Repo, "ready")) && DateTime.UtcNow < deadline) Thread.Sleep(50);
        Assert.True(File.Exists(Path.Combine(cluster.Repo, "ready")), "the fake rank never started");
        Launch.PosixSignals.Send(p.Id, Launch.PosixSignals.SIGUSR1); // what --signal=B:USR1@300 does
        var (code, output) = Finish(p);
        Assert.Equal(75, code);
        Assert.Contains("USR1: asking the ranks to checkpoint and stop", output);
        Assert.Contains("rank got USR1, saving", output);
        Assert.Contains("scontrol requeue 4242", cluster.CallLog);
    }
}

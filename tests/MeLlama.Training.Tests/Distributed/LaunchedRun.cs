using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using MeLlama.Training.Config;
using MeLlama.Training.Metrics;

namespace MeLlama.Training.Tests.Distributed;

/// <summary>
/// `mellama launch --nproc N -- pretrain --config FILE` (or another command) of the real binary, with the launcher's output captured line by
/// line (each rank's lines arrive prefixed "[rank r] " by the launcher).
/// </summary>
sealed partial class LaunchedRun : IDisposable
{
    readonly Process _process;
    readonly ConcurrentQueue<string> _stdout = new(), _stderr = new();

    public string Stdout => string.Join('\n', _stdout);
    public string Stderr => string.Join('\n', _stderr);
    public string Output => Stdout + "\n" + Stderr;

    public LaunchedRun(int ranks, string recipe, params string[] extra) : this(ranks, ["pretrain", "--config", recipe, .. extra]) { }

    /// <summary>`mellama launch --nproc N -- COMMAND ARGS...` (<paramref name="command"/> = the subcommand and its arguments).</summary>
    public LaunchedRun(int ranks, IEnumerable<string> command)
    {
        var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { PreemptionTests.MellamaDll(), "launch", "--nproc", ranks.ToString(CultureInfo.InvariantCulture), "--stop-grace-s", "20", "--" }.Concat(command))
            psi.ArgumentList.Add(a);
        // A clean slate: no distributed variables inherited from whatever runs the tests.
        foreach (var name in new[] { "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "MELLAMA_JOB_SECRET", "SLURM_PROCID", "SLURM_STEP_ID", "MELLAMA_DIST" })
            psi.Environment.Remove(name);
        psi.Environment["OMP_NUM_THREADS"] = "1";
        // A dead peer is reported by the store at once; the timeout only bounds a hung one.
        psi.Environment["MELLAMA_COLLECTIVE_TIMEOUT_S"] = "60";
        _process = new Process { StartInfo = psi };
        _process.OutputDataReceived += (_, e) => { if (e.Data != null) _stdout.Enqueue(e.Data); };
        _process.ErrorDataReceived += (_, e) => { if (e.Data != null) _stderr.Enqueue(e.Data); };
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>Exit code, or null when still running after <paramref name="timeout"/>.</summary>
    public int? WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout)) return null;
        _process.WaitForExit();
        return _process.ExitCode;
    }

    [GeneratedRegex(@"Launched \d+ ranks .*pids ([\d,]+)\)")]
    private static partial Regex LaunchedLine();

    /// <summary>The ranks' pids, from the launcher's start-up line.</summary>
    public int[] RankPids(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            foreach (var line in _stderr)
                if (LaunchedLine().Match(line) is { Success: true } m)
                    return m.Groups[1].Value.Split(',').Select(p => int.Parse(p, CultureInfo.InvariantCulture)).ToArray();
            Assert.False(_process.HasExited, "launch exited before reporting its ranks:\n" + Output);
            Assert.True(DateTime.UtcNow < deadline, "launch did not report its ranks:\n" + Output);
            Thread.Sleep(50);
        }
    }

    /// <summary>Waits until rank 0 has written <paramref name="steps"/> training lines to metrics.jsonl.</summary>
    public void WaitForSteps(string runDir, int steps, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (TrainLines(runDir) < steps)
        {
            Assert.False(_process.HasExited, $"launch exited (code {(_process.HasExited ? _process.ExitCode : 0)}) before {steps} steps:\n" + Output);
            Assert.True(clock.Elapsed < timeout, $"no {steps} steps within {timeout}:\n" + Output);
            Thread.Sleep(20);
        }
    }

    public static int TrainLines(string runDir)
    {
        string path = Path.Combine(runDir, "metrics.jsonl");
        if (!File.Exists(path)) return 0;
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using var reader = new StreamReader(fs);
        return reader.ReadToEnd().Split('\n').Count(l => l.Contains("\"kind\":\"train\"", StringComparison.Ordinal));
    }

    /// <summary>Held-out losses by (step, domain) from metrics.jsonl.</summary>
    public static SortedDictionary<(long, string), double> EvalLosses(string runDir) =>
        new(MetricsLog.Read(Path.Combine(runDir, "metrics.jsonl")).Where(r => r.Kind == "eval").ToDictionary(r => (r.Step, r.Domain!), r => r.Loss!.Value));

    public static string WriteRecipe(TrainConfig config, string path)
    {
        File.WriteAllText(path, ConfigLoader.ToJson(config));
        return path;
    }

    public void Dispose()
    {
        try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        _process.Dispose();
    }
}

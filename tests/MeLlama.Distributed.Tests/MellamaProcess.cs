using System.Collections.Concurrent;
using System.Diagnostics;

namespace MeLlama.Distributed.Tests;

/// <summary>A running `mellama` process (the real binary from this test's output folder) with its output captured line by line.</summary>
sealed class MellamaProcess : IDisposable
{
    readonly Process process;
    readonly ConcurrentQueue<string> stdout = new(), stderr = new();
    readonly SemaphoreSlim lineArrived = new(0);

    public int Pid => process.Id;
    public string Stdout => string.Join('\n', stdout);
    public string Stderr => string.Join('\n', stderr);

    public MellamaProcess(IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "mellama.dll");
        var host = Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
        var psi = new ProcessStartInfo(host) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        // A clean slate: no distributed variables inherited from whatever runs the tests.
        foreach (var name in new[] { "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", JobSecret.EnvVar, "SLURM_PROCID", "SLURM_STEP_ID" })
            psi.Environment.Remove(name);
        psi.Environment["OMP_NUM_THREADS"] = "1";
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        process = new Process { StartInfo = psi };
        process.OutputDataReceived += (_, e) => { if (e.Data != null) { stdout.Enqueue(e.Data); lineArrived.Release(); } };
        process.ErrorDataReceived += (_, e) => { if (e.Data != null) { stderr.Enqueue(e.Data); lineArrived.Release(); } };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    /// <summary>Waits until a stdout line contains <paramref name="fragment"/>.</summary>
    public void WaitForOutput(string fragment, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!stdout.Any(l => l.Contains(fragment, StringComparison.Ordinal)))
        {
            if (process.HasExited && !lineArrived.Wait(200))
                throw new InvalidOperationException($"mellama exited ({process.ExitCode}) before printing '{fragment}'.\nstdout:\n{Stdout}\nstderr:\n{Stderr}");
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero) throw new TimeoutException($"no '{fragment}' within {timeout}.\nstdout:\n{Stdout}\nstderr:\n{Stderr}");
            lineArrived.Wait(left < TimeSpan.FromMilliseconds(500) ? left : TimeSpan.FromMilliseconds(500));
        }
    }

    /// <summary>Exit code, or null if it is still running after <paramref name="timeout"/>.</summary>
    public int? WaitForExit(TimeSpan timeout)
    {
        if (!process.WaitForExit(timeout)) return null;
        process.WaitForExit(); // flush the output handlers
        return process.ExitCode;
    }

    public void Signal(int signal) => Launch.PosixSignals.Send(process.Id, signal);

    public void Kill() => process.Kill();

    public void Dispose()
    {
        try { if (!process.HasExited) process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        process.Dispose();
    }
}

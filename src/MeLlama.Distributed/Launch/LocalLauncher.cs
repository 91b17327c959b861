using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Serilog;

namespace MeLlama.Distributed.Launch;

/// <summary>
/// Starts N ranks of a command on this machine with torchrun-style variables (RANK, WORLD_SIZE,
/// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and a fresh job secret, labels their output
/// lines with their rank, forwards SIGTERM/SIGINT/SIGUSR1/SIGUSR2/SIGHUP to them, and fails fast: when a
/// rank fails, the others get SIGTERM, then SIGKILL after a grace period, and the launcher exits with the
/// failed rank's code. A rank exiting with 75 ("saved, requeue") is a clean stop, not a failure.
/// </summary>
public sealed class LocalLauncher(LaunchOptions options, TextWriter stdout, TextWriter stderr, ILogger log)
{
    static readonly int[] ForwardedSignals = [PosixSignals.SIGTERM, PosixSignals.SIGINT, PosixSignals.SIGUSR1, PosixSignals.SIGUSR2, PosixSignals.SIGHUP];

    readonly Lock outputLock = new();

    public int Run()
    {
        if (options.ProcessCount < 1) throw new ArgumentException("--nproc must be at least 1");
        if (options.Arguments.Count == 0) throw new ArgumentException("nothing to launch: give the command after --");
        int port = options.MasterPort ?? FreePort();
        string secret = System.Environment.GetEnvironmentVariable(JobSecret.EnvVar) is { Length: >= JobSecret.MinLength } inherited
            ? inherited : JobSecret.Generate().EnvironmentValue;
        var (exe, prefix) = options.Executable is { } e ? (e, options.ExecutablePrefix) : LaunchOptions.SelfInvocation();

        var ranks = new Process[options.ProcessCount];
        var registrations = new List<PosixSignalRegistration>();
        try
        {
            for (int rank = 0; rank < ranks.Length; rank++)
                ranks[rank] = Start(rank, exe, prefix, port, secret);
            log.Information("Launched {Count} ranks of `{Command}` (store 127.0.0.1:{Port}, pids {Pids})",
                ranks.Length, string.Join(' ', options.Arguments), port, string.Join(",", ranks.Select(p => p.Id)));
            foreach (int signal in ForwardedSignals)
                registrations.Add(PosixSignalRegistration.Create(PosixSignals.AsPosixSignal(signal), context =>
                {
                    context.Cancel = true; // the launcher lives on until its ranks have exited
                    Forward(ranks, signal);
                }));
            return Supervise(ranks);
        }
        finally
        {
            foreach (var r in registrations) r.Dispose();
            foreach (var p in ranks.Where(p => p != null))
            {
                if (!HasExited(p)) PosixSignals.Send(p.Id, PosixSignals.SIGKILL);
                p.Dispose();
            }
        }
    }

    Process Start(int rank, string exe, IReadOnlyList<string> prefix, int port, string secret)
    {
        var psi = new ProcessStartInfo(exe)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in prefix) psi.ArgumentList.Add(a);
        foreach (var a in options.Arguments) psi.ArgumentList.Add(a);
        var env = psi.Environment;
        env["RANK"] = rank.ToString(CultureInfo.InvariantCulture);
        env["LOCAL_RANK"] = rank.ToString(CultureInfo.InvariantCulture);
        env["WORLD_SIZE"] = options.ProcessCount.ToString(CultureInfo.InvariantCulture);
        env["LOCAL_WORLD_SIZE"] = options.ProcessCount.ToString(CultureInfo.InvariantCulture);
        env["GROUP_RANK"] = "0";
        env["MASTER_ADDR"] = options.MasterAddr;
        env["MASTER_PORT"] = port.ToString(CultureInfo.InvariantCulture);
        env[JobSecret.EnvVar] = secret;
        // Like torchrun: N ranks sharing this machine's cores should not each start one thread per core.
        if (!env.ContainsKey("OMP_NUM_THREADS") && options.ProcessCount > 1)
            env["OMP_NUM_THREADS"] = Math.Max(1, System.Environment.ProcessorCount / options.ProcessCount).ToString(CultureInfo.InvariantCulture);
        foreach (var (k, v) in options.Environment) env[k] = v;

        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, line) => { if (line.Data != null) Write(stdout, rank, line.Data); };
        process.ErrorDataReceived += (_, line) => { if (line.Data != null) Write(stderr, rank, line.Data); };
        if (!process.Start()) throw new InvalidOperationException($"could not start rank {rank} ({exe})");
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    void Write(TextWriter writer, int rank, string line)
    {
        lock (outputLock)
        {
            writer.Write("[rank ");
            writer.Write(rank.ToString(CultureInfo.InvariantCulture));
            writer.Write("] ");
            writer.WriteLine(line);
            writer.Flush();
        }
    }

    int Supervise(Process[] ranks)
    {
        var exits = ranks.Select(p => p.WaitForExitAsync()).ToArray();
        var finished = new bool[ranks.Length];
        int? failedRank = null;
        DateTime? stopDeadline = null; // set once the job is going down: survivors are killed after it
        bool killed = false;
        while (finished.Any(f => !f))
        {
            var pending = exits.Where((_, i) => !finished[i]).ToArray();
            var wait = stopDeadline is { } d ? Max(d - DateTime.UtcNow, TimeSpan.Zero) : Timeout.InfiniteTimeSpan;
            Task.WaitAny(pending, wait);
            for (int rank = 0; rank < ranks.Length; rank++)
            {
                if (finished[rank] || !exits[rank].IsCompleted) continue;
                finished[rank] = true;
                int code = ranks[rank].ExitCode;
                if (code == 0) { log.Debug("Rank {Rank} finished", rank); continue; }
                if (code == LaunchOptions.RequeueExitCode && failedRank == null)
                {
                    log.Information("Rank {Rank} stopped with exit code {Code} (checkpoint saved, requeue requested)", rank, code);
                    stopDeadline ??= DateTime.UtcNow + options.StopGrace;
                    continue;
                }
                if (failedRank != null) continue;
                failedRank = rank;
                log.Error("Rank {Rank} (pid {Pid}) failed with {Exit}; stopping the other ranks", rank, ranks[rank].Id, PosixSignals.DescribeExit(code));
                for (int other = 0; other < ranks.Length; other++)
                    if (!finished[other] && !HasExited(ranks[other])) PosixSignals.Send(ranks[other].Id, PosixSignals.SIGTERM);
                stopDeadline = DateTime.UtcNow + options.StopGrace;
            }
            if (stopDeadline is { } deadline && !killed && DateTime.UtcNow >= deadline && finished.Any(f => !f))
            {
                killed = true;
                var survivors = Enumerable.Range(0, ranks.Length).Where(i => !finished[i]).ToArray();
                log.Error("Rank(s) {Ranks} did not exit within {Grace} s; killing them", string.Join(",", survivors), options.StopGrace.TotalSeconds);
                foreach (int i in survivors) PosixSignals.Send(ranks[i].Id, PosixSignals.SIGKILL);
                stopDeadline = null;
            }
        }
        foreach (var p in ranks) p.WaitForExit(); // drains the output pumps

        if (failedRank is int failed)
        {
            int code = ranks[failed].ExitCode;
            log.Error("Launch failed: rank {Rank} exited first with {Exit}", failed, PosixSignals.DescribeExit(code));
            return code is > 0 and < 256 ? code : 1;
        }
        return ranks.Any(p => p.ExitCode == LaunchOptions.RequeueExitCode) ? LaunchOptions.RequeueExitCode : 0;
    }

    void Forward(Process[] ranks, int signal)
    {
        var alive = ranks.Where(p => p != null && !HasExited(p)).ToArray();
        log.Warning("Forwarding {Signal} to {Count} rank(s)", PosixSignals.Name(signal), alive.Length);
        foreach (var p in alive) PosixSignals.Send(p.Id, signal);
    }

    static bool HasExited(Process p)
    {
        try { return p.HasExited; }
        catch (InvalidOperationException) { return true; }
    }

    static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    /// <summary>A port that was free a moment ago (the usual race with other programs is accepted, as torchrun does).</summary>
    public static int FreePort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }
}

using System.Runtime.InteropServices;

namespace MeLlama.Training.Runtime;

/// <summary>
/// Turns SIGTERM (Slurm's preemption/timeout notice, `scancel`), SIGUSR1 (Slurm `--signal=USR1@120`) and SIGINT
/// (Ctrl-C) into a request that the training loop honours between steps: finish the step, save, exit with
/// <see cref="ExitCodes.Preempted"/>. A second SIGINT is left to its default action so a stuck run can still be
/// interrupted. .NET's PosixSignalRegistration accepts raw signal numbers on Unix, which is how SIGUSR1 is caught
/// without a native handler.
/// </summary>
public sealed class StopSignals : IDisposable
{
    // Linux numbering (x86-64 and arm64); macOS uses 30 for SIGUSR1.
    static PosixSignal SigUsr1 => OperatingSystem.IsMacOS() ? (PosixSignal)30 : (PosixSignal)10;

    readonly List<PosixSignalRegistration> _registrations = [];
    volatile string? _reason;
    int _interrupts;

    public bool StopRequested => _reason != null;
    public string? Reason => _reason;

    public StopSignals()
    {
        if (OperatingSystem.IsWindows())
        {
            _registrations.Add(PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => OnSignal(ctx, "SIGINT")));
            return;
        }
        _registrations.Add(PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => OnSignal(ctx, "SIGTERM")));
        _registrations.Add(PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => OnSignal(ctx, "SIGINT")));
        _registrations.Add(PosixSignalRegistration.Create(SigUsr1, ctx => OnSignal(ctx, "SIGUSR1")));
    }

    void OnSignal(PosixSignalContext context, string name)
    {
        if (name == "SIGINT" && Interlocked.Increment(ref _interrupts) > 1) return; // second Ctrl-C: default action
        context.Cancel = true;
        _reason ??= name;
    }

    /// <summary>Requests a stop from inside the process (wall-clock budget, tests).</summary>
    public void Request(string reason) => _reason ??= reason;

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
        _registrations.Clear();
    }
}

/// <summary>Exit codes of <c>mellama pretrain</c> (documented in the README and in <c>--help</c>).</summary>
public static class ExitCodes
{
    /// <summary>Reached max_steps / max_tokens; final checkpoint written.</summary>
    public const int Completed = 0;
    /// <summary>Runtime failure (including too many non-finite steps in a row; the last good state is saved).</summary>
    public const int Failed = 1;
    /// <summary>Bad config, overrides or inputs; nothing was trained.</summary>
    public const int BadInput = 2;
    /// <summary>Stopped by SIGTERM/SIGUSR1/SIGINT or the --time-limit budget after saving a checkpoint: resubmit to
    /// continue (EX_TEMPFAIL from sysexits.h; a Slurm batch script can `scontrol requeue` on it).</summary>
    public const int Preempted = 75;
}

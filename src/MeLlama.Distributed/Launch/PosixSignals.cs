using System.Runtime.InteropServices;

namespace MeLlama.Distributed.Launch;

/// <summary>Linux signal numbers and kill(2), for forwarding signals to child ranks.</summary>
public static partial class PosixSignals
{
    public const int SIGHUP = 1, SIGINT = 2, SIGKILL = 9, SIGUSR1 = 10, SIGUSR2 = 12, SIGTERM = 15;

    /// <summary>.NET has no name for SIGUSR1/2 but accepts raw numbers cast to <see cref="PosixSignal"/>.</summary>
    public static PosixSignal AsPosixSignal(int signal) => signal switch
    {
        SIGHUP => PosixSignal.SIGHUP,
        SIGINT => PosixSignal.SIGINT,
        SIGTERM => PosixSignal.SIGTERM,
        _ => (PosixSignal)signal,
    };

    public static int Number(PosixSignal signal) => signal switch
    {
        PosixSignal.SIGHUP => SIGHUP,
        PosixSignal.SIGINT => SIGINT,
        PosixSignal.SIGTERM => SIGTERM,
        _ => (int)signal,
    };

    public static string Name(int signal) => signal switch
    {
        SIGHUP => "SIGHUP", SIGINT => "SIGINT", SIGKILL => "SIGKILL", SIGUSR1 => "SIGUSR1", SIGUSR2 => "SIGUSR2", SIGTERM => "SIGTERM",
        6 => "SIGABRT", 11 => "SIGSEGV", 7 => "SIGBUS", 4 => "SIGILL", 8 => "SIGFPE", 3 => "SIGQUIT", 13 => "SIGPIPE",
        _ => $"signal {signal}",
    };

    /// <summary>Sends <paramref name="signal"/> to <paramref name="pid"/>; false if the process is gone.</summary>
    public static bool Send(int pid, int signal) => kill(pid, signal) == 0;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);

    /// <summary>"exit code 3" or "killed by SIGKILL" for a child's exit status as .NET reports it (128 + signal).</summary>
    public static string DescribeExit(int exitCode) =>
        exitCode > 128 && exitCode < 160 ? $"exit code {exitCode} (killed by {Name(exitCode - 128)})" : $"exit code {exitCode}";
}

using System.Runtime.InteropServices;

namespace MeLlamaBench;

/// <summary>
/// CPU time of this process (all threads) in seconds, at nanosecond resolution (Process.TotalProcessorTime is
/// tick-granular). On a machine shared with other work, CPU seconds per step are a steadier measure of the work a
/// step does than wall seconds; with one compute thread they are that thread's time.
/// </summary>
static class CpuClock
{
    const int ClockProcessCpuTimeId = 2;

    [StructLayout(LayoutKind.Sequential)]
    struct TimeSpec { public long Seconds; public long Nanoseconds; }

    [DllImport("libc", SetLastError = true)] static extern int clock_gettime(int clock, out TimeSpec time);

    /// <summary>Minor page faults of this process so far (fresh memory touched: large tensors are mmapped anew each step).</summary>
    public static long MinorFaults()
    {
        if (!OperatingSystem.IsLinux()) return 0;
        string stat = File.ReadAllText("/proc/self/stat");
        // Fields after the parenthesised command name: state is field 3, minflt field 10.
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[7], System.Globalization.CultureInfo.InvariantCulture);
    }

    public static double ProcessSeconds()
    {
        if (!OperatingSystem.IsLinux()) return System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;
        clock_gettime(ClockProcessCpuTimeId, out var t);
        return t.Seconds + t.Nanoseconds * 1e-9;
    }
}

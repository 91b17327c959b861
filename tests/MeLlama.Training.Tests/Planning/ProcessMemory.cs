using System.Globalization;
using System.Runtime.InteropServices;

namespace MeLlama.Training.Tests.Planning;

/// <summary>
/// Resident memory of this process, for comparing the planner's activation formula with what a forward pass
/// really keeps. glibc serves large blocks with mmap only above a threshold that it raises on its own after frees
/// (up to 32 MiB); freed heap blocks are then reused without touching new pages and RSS stops tracking live
/// tensors. Pinning the threshold (which also turns the adjustment off) and trimming eagerly makes every
/// tensor above 64 KiB its own mapping, returned to the kernel when freed, so an RSS delta measures live bytes.
/// </summary>
static partial class ProcessMemory
{
    const int M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3;

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int MallOpt(int param, int value);

    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);

    public static bool Available => OperatingSystem.IsLinux() && File.Exists("/proc/self/statm");

    public static void PinMallocThresholds()
    {
        MallOpt(M_MMAP_THRESHOLD, 64 << 10);
        MallOpt(M_TRIM_THRESHOLD, 128 << 10);
    }

    /// <summary>Resident bytes now (after returning free heap memory to the kernel).</summary>
    public static long ResidentBytes()
    {
        MallocTrim(0);
        var fields = File.ReadAllText("/proc/self/statm").Split(' ');
        return long.Parse(fields[1], CultureInfo.InvariantCulture) * Environment.SystemPageSize;
    }
}

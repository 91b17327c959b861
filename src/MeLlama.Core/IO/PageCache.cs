using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace MeLlama.Core.IO;

/// <summary>Hints to the kernel's page cache about files about to be read.</summary>
public static partial class PageCache
{
    /// <summary>
    /// Starts reading the whole file into the page cache in the background (posix_fadvise WILLNEED) and returns at
    /// once. A reader that does CPU work per byte (e.g. hashing) then finds its next pieces already in memory
    /// instead of waiting for the disk between pieces, so the disk and the CPU work at the same time. Only a hint:
    /// a no-op off Linux, and failures are ignored (the reads still happen, just without the overlap).
    /// </summary>
    public static void PrefetchInBackground(SafeFileHandle file)
    {
        if (!OperatingSystem.IsLinux()) return;
        // The call itself submits the reads and can block for a while on a long file, hence its own thread; the
        // handle is kept alive by the reference until it returns (the caller still owns and disposes it).
        var thread = new Thread(() =>
        {
            bool added = false;
            try
            {
                file.DangerousAddRef(ref added);
                _ = posix_fadvise((int)file.DangerousGetHandle(), 0, 0, PosixFadvWillNeed);
            }
            catch (ObjectDisposedException) { } // the reader finished (or failed) first: nothing left to prefetch
            finally
            {
                if (added) file.DangerousRelease();
            }
        }) { IsBackground = true, Name = "page-cache prefetch" };
        thread.Start();
    }

    const int PosixFadvWillNeed = 3;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int posix_fadvise(int fd, long offset, long len, int advice);
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using static TorchSharp.torch;

namespace MeLlamaBench;

/// <summary>
/// `io`: reads one file cold (dropped from the page cache) into tensor memory several ways, to see what a
/// checkpoint loader loses against dd: kernel readahead on or off (FileOptions.RandomAccess), fresh memory
/// (page faults during the read) or memory touched beforehand, one thread or two.
/// </summary>
static class IoExperiment
{
    public static Dictionary<string, object> Run(Args args)
    {
        string work = Path.GetFullPath(args.Get("work") ?? throw new ArgumentException("--work DIR is required"));
        int megabytes = args.Int("mb", 512);
        int repeats = args.Int("repeats", 2);
        args.RejectUnknown();
        Directory.CreateDirectory(work);
        string path = Path.Combine(work, "io.bin");
        long bytes = (long)megabytes << 20;
        using (var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            var block = new byte[16 << 20];
            new Random(1).NextBytes(block);
            for (long done = 0; done < bytes; done += block.Length) fs.Write(block, 0, (int)Math.Min(block.Length, bytes - done));
            fs.Flush(flushToDisk: true);
        }
        var results = new Dictionary<string, object>();
        foreach (var (name, options, prefault, threads) in new (string, FileOptions, bool, int)[]
                 {
                     ("random-access, fresh memory, 1 thread", FileOptions.RandomAccess, false, 1),
                     ("default, fresh memory, 1 thread", FileOptions.None, false, 1),
                     ("sequential-scan, fresh memory, 1 thread", FileOptions.SequentialScan, false, 1),
                     ("default, touched memory, 1 thread", FileOptions.None, true, 1),
                     ("default, fresh memory, 2 threads", FileOptions.None, false, 2),
                     ("random-access, fresh memory, 2 threads", FileOptions.RandomAccess, false, 2),
                     ("O_DIRECT, fresh memory, 4 threads", (FileOptions)0x4000, false, 4),
                     ("O_DIRECT, touched memory, 4 threads", (FileOptions)0x4000, true, 4),
                     ("default, fresh memory + MADV_HUGEPAGE, 1 thread", FileOptions.None, false, 1),
                     ("default, fresh memory + MADV_POPULATE_WRITE (timed), 1 thread", FileOptions.None, false, 1),
                     ("default, fresh memory + MADV_HUGEPAGE + POPULATE_WRITE (timed), 1 thread", FileOptions.None, false, 1),
                 })
        {
            var rates = new List<double>();
            for (int r = 0; r < repeats; r++)
            {
                DropFromPageCache(path);
                using var target = empty([bytes / 4], ScalarType.Float32);
                if (prefault) target.zero_();
                var sw = Stopwatch.StartNew();
                if (name.Contains("MADV_HUGEPAGE", StringComparison.Ordinal)) Advise(target, 14);
                if (name.Contains("POPULATE_WRITE", StringComparison.Ordinal)) Advise(target, 23);
                using (var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, options))
                    ReadAll(handle, target, bytes, threads);
                rates.Add(bytes / sw.Elapsed.TotalSeconds / 1e9);
            }
            TrainBench.Log($"io {name,-42}: {rates.Max():F2} GB/s (best of {repeats})");
            results[name] = rates.Max();
        }
        File.Delete(path);
        return results;
    }

    static unsafe void ReadAll(SafeFileHandle handle, Tensor target, long bytes, int threads)
    {
        using var storage = target.storage<float>();
        byte* basePtr = (byte*)storage.data_ptr();
        long Piece = threads >= 4 ? 16L << 20 : 64L << 20; // tensors of a 130M model are 2-100 MB
        long pieces = (bytes + Piece - 1) / Piece;
        Parallel.For(0, pieces, new ParallelOptions { MaxDegreeOfParallelism = threads }, p =>
        {
            long start = p * Piece, length = Math.Min(Piece, bytes - start);
            long done = 0;
            while (done < length)
            {
                int n = RandomAccess.Read(handle, new Span<byte>(basePtr + start + done, (int)Math.Min(int.MaxValue, length - done)), start + done);
                if (n <= 0) throw new EndOfStreamException();
                done += n;
            }
        });
    }

    static unsafe void Advise(Tensor target, int advice)
    {
        using var storage = target.storage<float>();
        long start = (long)storage.data_ptr(), end = start + target.numel() * 4;
        long a = (start + 4095) & ~4095L, len = (end - a) & ~4095L;
        if (madvise((IntPtr)a, (UIntPtr)(ulong)len, advice) != 0) TrainBench.Log($"madvise {advice} failed: errno {Marshal.GetLastPInvokeError()}");
    }

    [DllImport("libc", SetLastError = true)] static extern int madvise(IntPtr addr, UIntPtr length, int advice);

    static void DropFromPageCache(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        posix_fadvise((int)handle.DangerousGetHandle(), 0, 0, 4);
    }

    [DllImport("libc", SetLastError = true)] static extern int posix_fadvise(int fd, long offset, long len, int advice);
}

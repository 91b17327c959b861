using System.Runtime.InteropServices;

namespace MeLlama.Core.IO;

/// <summary>
/// Writes that are all-or-nothing: data goes to a temporary name in the same folder, is flushed to
/// disk, then renamed over the destination, and the folder entry itself is fsynced. A crash (or
/// kill -9) leaves either the old file or the new one, never a torn one.
/// </summary>
public static class AtomicFile
{
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> data, UnixFileMode? mode = null)
    {
        string tmp = TempName(path);
        try
        {
            using (var fs = Create(tmp, mode))
            {
                fs.Write(data);
                fs.Flush(flushToDisk: true);
            }
            Commit(tmp, path);
        }
        finally { TryDelete(tmp); }
    }

    public static void WriteAllText(string path, string text, UnixFileMode? mode = null) =>
        WriteAllBytes(path, System.Text.Encoding.UTF8.GetBytes(text), mode);

    /// <summary>Streams content produced by <paramref name="write"/> into <paramref name="path"/> atomically.</summary>
    public static void Write(string path, Action<Stream> write, UnixFileMode? mode = null)
    {
        string tmp = TempName(path);
        try
        {
            using (var fs = Create(tmp, mode))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            Commit(tmp, path);
        }
        finally { TryDelete(tmp); }
    }

    public static async Task WriteAsync(string path, Func<Stream, Task> write, UnixFileMode? mode = null)
    {
        string tmp = TempName(path);
        try
        {
            await using (var fs = Create(tmp, mode))
            {
                await write(fs).ConfigureAwait(false);
                fs.Flush(flushToDisk: true);
            }
            Commit(tmp, path);
        }
        finally { TryDelete(tmp); }
    }

    /// <summary>Flushes a folder's entries (new names, renames) to disk.</summary>
    public static void FsyncDirectory(string dir)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return;
        int fd = Native.open(dir, 0 /* O_RDONLY */);
        if (fd < 0) return;
        try { Native.fsync(fd); } finally { Native.close(fd); }
    }

    /// <summary>Renames a finished temporary file (or folder) into place and makes the rename durable.</summary>
    public static void Commit(string tmp, string path)
    {
        if (Directory.Exists(tmp))
        {
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
            Directory.Move(tmp, path);
        }
        else File.Move(tmp, path, overwrite: true);
        FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    public static string TempName(string path) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, $".{Path.GetFileName(path)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");

    static FileStream Create(string path, UnixFileMode? mode)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None, BufferSize = 1 << 20 };
        if (mode is { } m && !OperatingSystem.IsWindows()) options.UnixCreateMode = m;
        return new FileStream(path, options);
    }

    static void TryDelete(string path)
    {
        try { if (File.Exists(path)) File.Delete(path); } catch (IOException) { }
    }

    public static string Sha256File(string path) => ContentDigest.OfFile(path, DigestAlgorithm.Sha256);

    static partial class Native
    {
        [DllImport("libc", SetLastError = true)] public static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);
        [DllImport("libc", SetLastError = true)] public static extern int fsync(int fd);
        [DllImport("libc", SetLastError = true)] public static extern int close(int fd);
    }
}

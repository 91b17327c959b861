using System.IO.Compression;
using System.Text;

namespace MeLlama.Data.Tests;

/// <summary>Writes test inputs, optionally gzip- or zstd-compressed, or cut short.</summary>
static class InputWriters
{
    public static string Write(string path, byte[] content)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        byte[] data = content;
        if (path.EndsWith(".gz"))
        {
            var ms = new MemoryStream();
            using (var gz = new GZipStream(ms, CompressionLevel.Fastest, true)) gz.Write(content);
            data = ms.ToArray();
        }
        else if (path.EndsWith(".zst"))
        {
            var ms = new MemoryStream();
            using (var z = new ZstdSharp.CompressionStream(ms, 3, leaveOpen: true)) z.Write(content);
            data = ms.ToArray();
        }
        File.WriteAllBytes(path, data);
        return path;
    }

    public static string Write(string path, string content) => Write(path, Encoding.UTF8.GetBytes(content));

    /// <summary>Drops the last <paramref name="bytes"/> bytes (a download cut short).</summary>
    public static void Truncate(string path, int bytes)
    {
        using var fs = new FileStream(path, FileMode.Open);
        fs.SetLength(fs.Length - bytes);
    }

    /// <summary>Bytes of <paramref name="before"/>, an invalid UTF-8 sequence, then <paramref name="after"/>.</summary>
    public static byte[] WithInvalidUtf8(string before, string after) =>
        [.. Encoding.UTF8.GetBytes(before), 0xC3, 0x28, 0xFF, .. Encoding.UTF8.GetBytes(after)];
}

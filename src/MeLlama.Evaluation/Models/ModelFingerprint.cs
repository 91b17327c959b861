using System.Security.Cryptography;
using System.Text;

namespace MeLlama.Evaluation.Models;

/// <summary>
/// Identity of an HF model folder's weights: sha256 over config.json and the full bytes of every
/// *.safetensors file (sorted by name). A full hash, because fine-tunes keep file names and sizes; it reads
/// the weights once (~15 s for 13B at disk speed). The result is remembered in a small side file keyed by
/// the folder and its files' names, sizes and modification times, so a resumed run does not hash again.
/// </summary>
public static class ModelFingerprint
{
    public static string Compute(string hfDir, string? memoFile = null)
    {
        var files = Directory.EnumerateFiles(hfDir, "*.safetensors").Order(StringComparer.Ordinal).Prepend(Path.Combine(hfDir, "config.json")).ToList();
        foreach (var f in files) if (!File.Exists(f)) throw new FileNotFoundException($"{hfDir} has no {Path.GetFileName(f)}", f);
        string stamp = Path.GetFullPath(hfDir) + "|" + string.Join(";", files.Select(f => { var i = new FileInfo(f); return $"{i.Name}:{i.Length}:{i.LastWriteTimeUtc.Ticks}"; }));
        if (memoFile != null && File.Exists(memoFile))
        {
            var lines = File.ReadAllLines(memoFile);
            if (lines.Length == 2 && lines[0] == stamp) return lines[1];
        }
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 22];
        foreach (var f in files)
        {
            sha.AppendData(Encoding.UTF8.GetBytes(Path.GetFileName(f) + "\u0000"));
            using var stream = new FileStream(f, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 22, FileOptions.SequentialScan);
            int n;
            while ((n = stream.Read(buffer)) > 0) sha.AppendData(buffer, 0, n);
        }
        string fingerprint = "sha256:" + Convert.ToHexStringLower(sha.GetHashAndReset());
        if (memoFile != null) Core.IO.AtomicFile.WriteAllText(memoFile, stamp + "\n" + fingerprint + "\n");
        return fingerprint;
    }
}

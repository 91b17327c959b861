using System.Diagnostics;
using MeLlama.Core.IO;

namespace MeLlamaBench;

/// <summary>
/// `hash`: one core's throughput of each checkpoint checksum (<see cref="DigestAlgorithm"/>) over a 4 MB buffer that
/// stays in the CPU cache, i.e. the hashing cost alone, without the disk: why manifests moved from SHA-256 to XXH128.
/// </summary>
static class HashBench
{
    public static Dictionary<string, object> Run(Args args)
    {
        double seconds = args.Int("seconds", 2);
        args.RejectUnknown();
        var buffer = new byte[4 << 20];
        new Random(1).NextBytes(buffer);
        var results = new Dictionary<string, object>();
        foreach (var algorithm in Enum.GetValues<DigestAlgorithm>())
        {
            using var digest = new ContentDigest(algorithm);
            digest.Append(buffer); // warm-up
            long bytes = 0;
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed.TotalSeconds < seconds)
            {
                digest.Append(buffer);
                bytes += buffer.Length;
            }
            digest.FinishHex();
            double rate = bytes / sw.Elapsed.TotalSeconds / 1e9;
            TrainBench.Log($"hash {ContentDigest.Name(algorithm)}: {rate:F2} GB/s on one core");
            results[ContentDigest.Name(algorithm) + "_gb_per_s"] = rate;
        }
        return results;
    }
}

using System.Globalization;
using System.Text.RegularExpressions;

namespace MeLlama.Training.Planning;

/// <summary>
/// Memory sizes as people write them on a command line. Decimal units are SI (<c>80GB</c> = 80·10⁹ bytes), binary
/// units are powers of two (<c>80GiB</c> = <c>81920MiB</c> = 80·2³⁰ bytes). An "80GB" A100/H100 reports 81920 MiB
/// in nvidia-smi, i.e. 80 GiB: reading "80GB" as SI is the conservative choice (7% less), which is why it is the
/// literal reading rather than a guess at what the vendor meant.
/// </summary>
public static partial class ByteSize
{
    [GeneratedRegex(@"^\s*(?<n>[0-9]+(\.[0-9]+)?)\s*(?<u>[kmgt]i?b|b)?\s*$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex Pattern();

    /// <summary>Parses "80GB", "80GiB", "81920MiB", "512 MB", "1073741824" (bytes). Throws <see cref="FormatException"/> naming <paramref name="field"/>.</summary>
    public static long Parse(string text, string field)
    {
        var m = Pattern().Match(text ?? "");
        if (!m.Success)
            throw new FormatException($"{field}: '{text}' is not a memory size (examples: 80GB, 80GiB, 81920MiB, 2GiB)");
        double n = double.Parse(m.Groups["n"].Value, NumberStyles.Float, CultureInfo.InvariantCulture);
        string unit = m.Groups["u"].Success ? m.Groups["u"].Value.ToUpperInvariant() : "B";
        double scale = unit switch
        {
            "B" => 1,
            "KB" => 1e3, "MB" => 1e6, "GB" => 1e9, "TB" => 1e12,
            "KIB" => 1L << 10, "MIB" => 1L << 20, "GIB" => 1L << 30, "TIB" => 1L << 40,
            _ => throw new FormatException($"{field}: unknown unit '{unit}'"),
        };
        double bytes = n * scale;
        if (bytes <= 0 || bytes > long.MaxValue / 2)
            throw new FormatException($"{field}: '{text}' must be a positive size");
        return (long)Math.Round(bytes);
    }

    /// <summary>GiB with two decimals (the unit nvidia-smi and torch.cuda.memory_* report in, ×1024).</summary>
    public static string Gib(long bytes) => (bytes / (double)(1L << 30)).ToString("F2", CultureInfo.InvariantCulture) + " GiB";
}

using System.Text;

namespace MeLlama.Data.Sampling;

/// <summary>Hashes that are the same in every process and on every machine (string.GetHashCode is not).</summary>
public static class StableHash
{
    /// <summary>SplitMix64's finaliser: a good 64-bit mixer.</summary>
    public static ulong Mix(ulong x)
    {
        x += 0x9E3779B97F4A7C15UL;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        return x ^ (x >> 31);
    }

    /// <summary>FNV-1a over the UTF-8 bytes of <paramref name="text"/>, then mixed.</summary>
    public static ulong Of(string text)
    {
        ulong h = 0xCBF29CE484222325UL;
        foreach (byte b in Encoding.UTF8.GetBytes(text)) h = (h ^ b) * 0x100000001B3UL;
        return Mix(h);
    }

    public static ulong Combine(ulong a, ulong b) => Mix(a ^ Mix(b + 0x632BE59BD9B4E019UL));
}

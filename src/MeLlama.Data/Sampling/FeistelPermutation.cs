namespace MeLlama.Data.Sampling;

/// <summary>
/// A keyed pseudo-random permutation of [0, n) evaluated index by index in O(1) memory: a balanced Feistel
/// network over the smallest even-bit power of two ≥ n, with cycle walking to stay inside [0, n).
/// Used instead of a materialised shuffle so a 30M-sample epoch costs no memory and any position of the
/// shuffled order can be computed directly (which makes resuming free).
/// </summary>
public sealed class FeistelPermutation
{
    const int Rounds = 6;
    readonly long _n;
    readonly int _halfBits;
    readonly ulong _halfMask;
    readonly ulong[] _roundKeys = new ulong[Rounds];

    public FeistelPermutation(long n, ulong key)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        _n = n;
        int bits = 1;
        while (bits < 62 && (1L << bits) < n) bits++;
        _halfBits = (bits + 1) / 2;
        _halfMask = (1UL << _halfBits) - 1;
        ulong k = key;
        for (int r = 0; r < Rounds; r++) _roundKeys[r] = k = StableHash.Mix(k + (ulong)r);
    }

    public long Count => _n;

    /// <summary>The position-<paramref name="index"/> element of the shuffled order.</summary>
    public long Map(long index)
    {
        if ((ulong)index >= (ulong)_n) throw new ArgumentOutOfRangeException(nameof(index), index, $"outside [0, {_n})");
        if (_n <= 1) return index;
        ulong x = (ulong)index;
        do x = Encrypt(x); while (x >= (ulong)_n); // cycle walking: the domain is < 4n, so ~2 steps on average
        return (long)x;
    }

    ulong Encrypt(ulong x)
    {
        ulong left = x >> _halfBits, right = x & _halfMask;
        for (int r = 0; r < Rounds; r++)
        {
            ulong next = left ^ (StableHash.Mix(right ^ _roundKeys[r]) & _halfMask);
            left = right;
            right = next;
        }
        return (left << _halfBits) | right;
    }
}

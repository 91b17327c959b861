namespace MeLlama.Tokenization.SentencePiece;

/// <summary>
/// (left piece id, right piece id) → (merged piece id, merged piece score): every way a mergeable piece
/// splits into two pieces. Looking a pair up by two ints replaces SentencePiece's lookup of the
/// concatenated string, which is exact because every symbol during BPE is a piece (or an out-of-vocabulary
/// character, which the loader checks occurs in no piece). Open addressing over flat arrays: the lookup is
/// the innermost operation of encoding, and this avoids Dictionary's per-entry indirection.
/// </summary>
internal sealed class PairMergeTable
{
    const long Empty = -1; // ids are non-negative, so no real key is -1
    readonly long[] _keys;
    readonly int[] _mergedIds;
    readonly float[] _scores;
    readonly int _shift;

    public int Count { get; }

    public PairMergeTable(IReadOnlyList<(int Left, int Right, int Merged, float Score)> entries)
    {
        int bits = 4;
        while ((1 << bits) < entries.Count * 2) bits++; // load factor <= 0.5
        int capacity = 1 << bits;
        _shift = 64 - bits;
        _keys = new long[capacity];
        Array.Fill(_keys, Empty);
        _mergedIds = new int[capacity];
        _scores = new float[capacity];
        int mask = capacity - 1;
        foreach (var (left, right, merged, score) in entries)
        {
            long key = Key(left, right);
            int slot = Slot(key);
            while (_keys[slot] != Empty && _keys[slot] != key) slot = (slot + 1) & mask;
            if (_keys[slot] == Empty) Count++;
            _keys[slot] = key;
            _mergedIds[slot] = merged;
            _scores[slot] = score;
        }
    }

    static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    int Slot(long key) => (int)(((ulong)key * 0x9E3779B97F4A7C15UL) >> _shift);

    public bool TryGet(int left, int right, out int mergedId, out float score)
    {
        long key = Key(left, right);
        var keys = _keys;
        int mask = keys.Length - 1;
        for (int slot = Slot(key); ; slot = (slot + 1) & mask)
        {
            long k = keys[slot];
            if (k == key)
            {
                mergedId = _mergedIds[slot];
                score = _scores[slot];
                return true;
            }
            if (k == Empty)
            {
                mergedId = -1;
                score = 0;
                return false;
            }
        }
    }
}

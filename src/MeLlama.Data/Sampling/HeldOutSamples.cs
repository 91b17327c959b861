using MeLlama.Data.Datasets;

namespace MeLlama.Data.Sampling;

/// <summary>
/// Fixed-length samples (seqLen + 1 tokens, stride seqLen) from a prepared dataset's held-out split, in
/// stored order, for eval loss. The held-out split is chosen at prepare time by content hash (a fixed fraction
/// of documents, the same whatever the order or thread count), so no eval document is ever in training.
/// </summary>
public sealed class HeldOutSamples : IDisposable
{
    readonly PreparedDataset _dataset;

    HeldOutSamples(PreparedDataset dataset, int seqLen)
    {
        _dataset = dataset;
        SeqLen = seqLen;
        long tokens = dataset.Eval.Length;
        Count = tokens > seqLen ? (tokens - 1) / seqLen : 0;
    }

    public static HeldOutSamples Open(string datasetPath, int seqLen, VerifyLevel verify = VerifyLevel.Fast)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(seqLen, 1);
        return new HeldOutSamples(PreparedDataset.Open(datasetPath, verify), seqLen);
    }

    public int SeqLen { get; }
    public string Name => _dataset.Manifest.Name;
    /// <summary>Number of whole samples in the held-out split (0 if it is shorter than one sample).</summary>
    public long Count { get; }
    public long Tokens => _dataset.Eval.Length;

    public void Read(long index, Span<long> destination)
    {
        if ((ulong)index >= (ulong)Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"held-out split of '{Name}' has {Count} samples");
        _dataset.Eval.Read(index * SeqLen, destination[..(SeqLen + 1)]);
    }

    /// <summary>The sample indices rank <paramref name="rank"/> evaluates when the first <paramref name="maxSamples"/> are shared round-robin.</summary>
    public IEnumerable<long> IndicesForRank(int rank, int worldSize, long maxSamples = long.MaxValue)
    {
        long n = Math.Min(Count, maxSamples);
        for (long i = rank; i < n; i += worldSize) yield return i;
    }

    public void Dispose() => _dataset.Dispose();
}

namespace MeLlama.Evaluation.Perplexity;

/// <summary>
/// Fixed-length token windows of one domain's held-out text: window i holds WindowLength tokens; all but the
/// first are scored. (The data component's held-out samples are such windows with stride WindowLength − 1, so
/// every held-out token after the first is scored exactly once.)
/// </summary>
public interface ITokenWindowSource
{
    string Domain { get; }
    long Count { get; }
    int WindowLength { get; }
    void Read(long index, Span<long> destination);
}

/// <summary><see cref="ITokenWindowSource"/> over a prepared dataset's held-out split (Megatron shards + manifest).</summary>
public sealed class HeldOutWindowSource(Data.Sampling.HeldOutSamples samples, string? domain = null) : ITokenWindowSource, IDisposable
{
    public static HeldOutWindowSource Open(string preparedDatasetPath, int seqLen, string? domain = null) =>
        new(Data.Sampling.HeldOutSamples.Open(preparedDatasetPath, seqLen), domain);

    public string Domain => domain ?? samples.Name;
    public long Count => samples.Count;
    public int WindowLength => samples.SeqLen + 1;
    public void Read(long index, Span<long> destination) => samples.Read(index, destination);
    public void Dispose() => samples.Dispose();
}

/// <summary>In-memory windows (tests, or token streams from elsewhere): consecutive windows of a token list with stride WindowLength − 1.</summary>
public sealed class TokenListWindowSource(string domain, IReadOnlyList<int> tokens, int windowLength) : ITokenWindowSource
{
    public string Domain => domain;
    public long Count => tokens.Count >= windowLength ? (tokens.Count - 1) / (windowLength - 1) : 0;
    public int WindowLength => windowLength;
    public void Read(long index, Span<long> destination)
    {
        int start = checked((int)index * (windowLength - 1));
        for (int i = 0; i < windowLength; i++) destination[i] = tokens[start + i];
    }
}

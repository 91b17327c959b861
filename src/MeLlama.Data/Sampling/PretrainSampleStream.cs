using MeLlama.Data.Datasets;

namespace MeLlama.Data.Sampling;

/// <summary>Facts about one domain of an open stream.</summary>
public sealed record DomainInfo(string Name, string Path, double Weight, long Tokens, long Documents, long SamplesPerEpoch);

/// <summary>
/// The training-time sample stream: fixed-length samples of seqLen + 1 tokens packed across documents,
/// drawn from several prepared datasets (domains) in Megatron's largest-shortfall blend, shuffled within each
/// domain by a seeded per-epoch permutation, and split across data-parallel ranks by global sample index.
/// <para>
/// Sample j of a domain is tokens [j·seqLen, j·seqLen + seqLen + 1) of the domain's train split seen as one
/// sequence (documents back to back, each ending in EOS); consecutive samples share one token so every token
/// is a prediction target once per epoch. When a domain's samples are used up, its next epoch starts with a
/// fresh permutation (key = seed, domain name, epoch).
/// </para>
/// <para>
/// Each <see cref="NextBatch(int, Span{long})"/> call on every rank consumes microBatch × worldSize global
/// samples; rank r gets the r-th block of microBatch. All ranks must call it in lockstep (as data-parallel
/// training does). <see cref="State"/> is rank-independent, so resume works across a change of world size.
/// </para>
/// </summary>
public sealed class PretrainSampleStream : IDisposable
{
    readonly PreparedDataset[] _datasets;
    readonly DomainInfo[] _domains;
    readonly ulong[] _domainKeys;
    readonly BlendSchedule _blend;
    readonly Dictionary<(int Domain, long Epoch), FeistelPermutation> _permutations = [];

    public int SeqLen { get; }
    public ulong Seed { get; }
    public int Rank { get; }
    public int WorldSize { get; }
    public IReadOnlyList<DomainInfo> Domains => _domains;
    /// <summary>Global samples drawn so far (by all ranks together).</summary>
    public long GlobalSamples => _blend.Total;

    PretrainSampleStream(PreparedDataset[] datasets, IReadOnlyList<DomainDataset> specs, int seqLen, ulong seed, int rank, int worldSize, IReadOnlyList<long>? counts)
    {
        _datasets = datasets;
        SeqLen = seqLen;
        Seed = seed;
        Rank = rank;
        WorldSize = worldSize;
        _domains = new DomainInfo[specs.Count];
        _domainKeys = new ulong[specs.Count];
        for (int d = 0; d < specs.Count; d++)
        {
            var train = datasets[d].Train;
            long samples = train.Length > seqLen ? (train.Length - 1) / seqLen : 0;
            if (samples == 0 && specs[d].Weight > 0)
                throw new InvalidDataException($"domain '{specs[d].Name}' ({specs[d].Path}) has {train.Length} train tokens: fewer than one sample of {seqLen + 1}");
            _domains[d] = new DomainInfo(specs[d].Name, datasets[d].Path, specs[d].Weight, train.Length, train.Documents, samples);
            _domainKeys[d] = StableHash.Combine(seed, StableHash.Of(specs[d].Name));
        }
        _blend = new BlendSchedule([.. specs.Select(s => s.Weight)], counts);
    }

    /// <summary>
    /// Opens the domains' prepared datasets (checking shards per <paramref name="verify"/>) and positions the
    /// stream at <paramref name="resume"/> (or at the start).
    /// </summary>
    public static PretrainSampleStream Open(
        IReadOnlyList<DomainDataset> domains, int seqLen, ulong seed, int rank, int worldSize,
        SampleStreamState? resume = null, VerifyLevel verify = VerifyLevel.Fast)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(seqLen, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(worldSize, 1);
        if (rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {worldSize})");
        if (domains.Count == 0) throw new ArgumentException("at least one domain is needed", nameof(domains));
        if (domains.Select(d => d.Name).Distinct(StringComparer.Ordinal).Count() != domains.Count)
            throw new ArgumentException("domain names must be distinct", nameof(domains));
        long[]? counts = null;
        if (resume != null)
        {
            if (resume.Seed != seed) throw new ArgumentException($"resume state was written with seed {resume.Seed}, stream opened with {seed}");
            if (resume.SeqLen != seqLen) throw new ArgumentException($"resume state was written with seqLen {resume.SeqLen}, stream opened with {seqLen}");
            if (!resume.Domains.Select(c => c.Name).SequenceEqual(domains.Select(d => d.Name), StringComparer.Ordinal))
                throw new ArgumentException($"resume state has domains [{string.Join(", ", resume.Domains.Select(c => c.Name))}], stream opened with [{string.Join(", ", domains.Select(d => d.Name))}]");
            counts = [.. resume.Domains.Select(c => c.Samples)];
            if (counts.Sum() != resume.GlobalSamples) throw new ArgumentException("resume state is inconsistent: domain counts do not add up to globalSamples");
        }
        var opened = new List<PreparedDataset>();
        try
        {
            foreach (var d in domains) opened.Add(PreparedDataset.Open(d.Path, verify));
            return new PretrainSampleStream([.. opened], domains, seqLen, seed, rank, worldSize, counts);
        }
        catch
        {
            foreach (var ds in opened) ds.Dispose();
            throw;
        }
    }

    /// <summary>Snapshot to store in a checkpoint (identical on every rank).</summary>
    public SampleStreamState State => new()
    {
        Seed = Seed,
        SeqLen = SeqLen,
        GlobalSamples = _blend.Total,
        Domains = [.. _domains.Select((d, i) => new DomainCursor(d.Name, _blend.Counts[i]))],
    };

    /// <summary>Fills <paramref name="tokens"/> with this rank's <paramref name="microBatch"/> samples, each seqLen + 1 tokens.</summary>
    public void NextBatch(int microBatch, Span<long> tokens) => NextBatch(microBatch, tokens, []);

    /// <summary>As <see cref="NextBatch(int, Span{long})"/>, also reporting each sample's domain index when <paramref name="domains"/> is not empty.</summary>
    public void NextBatch(int microBatch, Span<long> tokens, Span<int> domains)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(microBatch, 1);
        int width = SeqLen + 1;
        if (tokens.Length != (long)microBatch * width)
            throw new ArgumentException($"tokens must hold microBatch × (seqLen + 1) = {(long)microBatch * width}, got {tokens.Length}", nameof(tokens));
        if (domains.Length != 0 && domains.Length != microBatch)
            throw new ArgumentException("domains must be empty or hold one entry per sample", nameof(domains));
        long first = (long)Rank * microBatch, end = first + microBatch;
        for (long j = 0; j < (long)microBatch * WorldSize; j++)
        {
            var (d, k) = _blend.Next();
            if (j < first || j >= end) continue;
            int slot = (int)(j - first);
            ReadDomainSample(d, k, tokens.Slice(slot * width, width));
            if (domains.Length != 0) domains[slot] = d;
        }
    }

    /// <summary>The <paramref name="k"/>-th sample drawn from domain <paramref name="domain"/> (any epoch).</summary>
    public void ReadDomainSample(int domain, long k, Span<long> destination)
    {
        var info = _domains[domain];
        long epoch = k / info.SamplesPerEpoch;
        if (!_permutations.TryGetValue((domain, epoch), out var perm))
        {
            if (_permutations.Count > 64) _permutations.Clear();
            perm = new FeistelPermutation(info.SamplesPerEpoch, StableHash.Combine(_domainKeys[domain], (ulong)epoch));
            _permutations[(domain, epoch)] = perm;
        }
        long sample = perm.Map(k % info.SamplesPerEpoch);
        _datasets[domain].Train.Read(sample * SeqLen, destination[..(SeqLen + 1)]);
    }

    public void Dispose()
    {
        foreach (var d in _datasets) d.Dispose();
    }
}

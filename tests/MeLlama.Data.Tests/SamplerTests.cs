using MeLlama.Data.Sampling;
using MeLlama.TestSupport;

namespace MeLlama.Data.Tests;

public class SamplerTests
{
    const int SeqLen = 16;

    static DomainDataset[] MakeDomains(TempDir tmp, double[] weights, int[]? docCounts = null)
    {
        string[] names = ["biomedical", "clinical", "general"];
        docCounts ??= [400, 60, 200];
        return [.. names.Select((n, i) => new DomainDataset(n,
            TestDatasets.Write(tmp[n], n, TestDatasets.Numbered(i, docCounts[i], 3, 40, seed: 100 + i), docsPerShard: 50), weights[i]))];
    }

    static List<long[]> Draw(PretrainSampleStream s, int batches, int micro)
    {
        var result = new List<long[]>();
        var buf = new long[micro * (SeqLen + 1)];
        for (int b = 0; b < batches; b++)
        {
            s.NextBatch(micro, buf);
            for (int i = 0; i < micro; i++) result.Add(buf.AsSpan(i * (SeqLen + 1), SeqLen + 1).ToArray());
        }
        return result;
    }

    /// <summary>Global order of samples drawn by all ranks together for the given number of lockstep calls.</summary>
    static List<long[]> DrawAllRanks(DomainDataset[] domains, int world, int batches, int micro, SampleStreamState? resume, out SampleStreamState end)
    {
        var perRank = new List<List<long[]>>();
        SampleStreamState? last = null;
        for (int r = 0; r < world; r++)
        {
            using var s = PretrainSampleStream.Open(domains, SeqLen, seed: 42, r, world, resume);
            perRank.Add(Draw(s, batches, micro));
            var st = s.State;
            if (last != null) Assert.Equal(last.ToJson(), st.ToJson()); // state is rank-independent
            last = st;
        }
        end = last!;
        var global = new List<long[]>();
        for (int b = 0; b < batches; b++)
            for (int r = 0; r < world; r++)
                global.AddRange(perRank[r].Skip(b * micro).Take(micro));
        return global;
    }

    [Fact]
    public void Realised_shares_track_15_1_4_within_a_tenth_of_a_percent_after_10000_samples()
    {
        using var tmp = new TempDir();
        var domains = MakeDomains(tmp, [15, 1, 4]);
        using var s = PretrainSampleStream.Open(domains, SeqLen, 7, 0, 1);
        var counts = new long[3];
        var buf = new long[10 * (SeqLen + 1)];
        var dom = new int[10];
        for (int i = 0; i < 1000; i++)
        {
            s.NextBatch(10, buf, dom);
            foreach (int d in dom) counts[d]++;
        }
        double[] expected = [0.75, 0.05, 0.20];
        for (int d = 0; d < 3; d++) Assert.InRange(counts[d] / 10000.0, expected[d] - 0.001, expected[d] + 0.001);
        Assert.Equal(counts, s.State.Domains.Select(c => c.Samples));
        // The small clinical domain ran out of samples and went into further epochs.
        Assert.True(counts[1] > s.Domains[1].SamplesPerEpoch);
    }

    [Fact]
    public void Samples_are_packed_windows_of_the_domain_token_stream_each_used_once_per_epoch()
    {
        using var tmp = new TempDir();
        var docs = TestDatasets.Numbered(0, 40, 3, 30, 3);
        long[] stream = [.. docs.SelectMany(d => d).Select(t => (long)t)];
        var domains = new[] { new DomainDataset("only", TestDatasets.Write(tmp["d"], "only", docs, 9), 1) };
        using var s = PretrainSampleStream.Open(domains, SeqLen, 1, 0, 1);
        long perEpoch = s.Domains[0].SamplesPerEpoch;
        Assert.Equal((stream.Length - 1) / SeqLen, perEpoch);
        var windows = Enumerable.Range(0, (int)perEpoch).ToDictionary(j => string.Join(",", stream.AsSpan(j * SeqLen, SeqLen + 1).ToArray()), j => j);
        var epoch0 = Draw(s, (int)perEpoch, 1).Select(x => windows[string.Join(",", x)]).ToList();
        var epoch1 = Draw(s, (int)perEpoch, 1).Select(x => windows[string.Join(",", x)]).ToList();
        Assert.Equal(Enumerable.Range(0, (int)perEpoch), epoch0.Order());
        Assert.Equal(Enumerable.Range(0, (int)perEpoch), epoch1.Order());
        Assert.NotEqual(Enumerable.Range(0, (int)perEpoch), epoch0); // shuffled
        Assert.NotEqual(epoch0, epoch1); // a fresh permutation per epoch
    }

    [Fact]
    public void Same_seed_same_samples_other_seed_other_samples()
    {
        using var tmp = new TempDir();
        var domains = MakeDomains(tmp, [15, 1, 4]);
        List<long[]> a, b, c;
        using (var s = PretrainSampleStream.Open(domains, SeqLen, 5, 0, 1)) a = Draw(s, 20, 4);
        using (var s = PretrainSampleStream.Open(domains, SeqLen, 5, 0, 1)) b = Draw(s, 20, 4);
        using (var s = PretrainSampleStream.Open(domains, SeqLen, 6, 0, 1)) c = Draw(s, 20, 4);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 1)]
    [InlineData(1, 3)]
    [InlineData(4, 2)]
    public void Save_restore_gives_the_uninterrupted_next_1000_samples_across_world_sizes(int worldBefore, int worldAfter)
    {
        using var tmp = new TempDir();
        var domains = MakeDomains(tmp, [15, 1, 4]);
        const int micro = 2;
        int before = 12 * 3 * 4 / (worldBefore * micro); // 144 global samples, divisible for all cases
        var reference = DrawAllRanks(domains, 1, (144 + 1008) / micro, micro, null, out _);

        var first = DrawAllRanks(domains, worldBefore, before, micro, null, out var saved);
        Assert.Equal(144, saved.GlobalSamples);
        var restored = SampleStreamState.FromJson(saved.ToJson());
        int after = 1008 / (worldAfter * micro);
        var next = DrawAllRanks(domains, worldAfter, after, micro, restored, out _);

        Assert.Equal(reference.Take(144), first);
        Assert.Equal(1008, next.Count);
        Assert.Equal(reference.Skip(144).Take(1008), next);
    }

    [Fact]
    public void Ranks_get_disjoint_parts_of_the_global_sample_order()
    {
        using var tmp = new TempDir();
        var domains = MakeDomains(tmp, [1, 1, 1]);
        using var r0 = PretrainSampleStream.Open(domains, SeqLen, 3, 0, 2);
        using var r1 = PretrainSampleStream.Open(domains, SeqLen, 3, 1, 2);
        var d0 = new int[3]; var d1 = new int[3];
        var b0 = new long[3 * (SeqLen + 1)]; var b1 = new long[3 * (SeqLen + 1)];
        r0.NextBatch(3, b0, d0);
        r1.NextBatch(3, b1, d1);
        Assert.Equal([0, 1, 2], d0); // global samples 0..2: one per domain (equal weights, ties to the first)
        Assert.Equal([0, 1, 2], d1); // global samples 3..5
        Assert.NotEqual(b0, b1);
    }

    [Fact]
    public void Resume_with_other_seed_or_domains_is_refused()
    {
        using var tmp = new TempDir();
        var domains = MakeDomains(tmp, [15, 1, 4]);
        SampleStreamState state;
        using (var s = PretrainSampleStream.Open(domains, SeqLen, 5, 0, 1)) { Draw(s, 3, 2); state = s.State; }
        Assert.Throws<ArgumentException>(() => PretrainSampleStream.Open(domains, SeqLen, 6, 0, 1, state));
        Assert.Throws<ArgumentException>(() => PretrainSampleStream.Open(domains, SeqLen + 1, 5, 0, 1, state));
        Assert.Throws<ArgumentException>(() => PretrainSampleStream.Open(domains[..2], SeqLen, 5, 0, 1, state));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(1000)]
    [InlineData(4097)]
    public void Feistel_permutation_is_a_bijection(int n)
    {
        var p = new FeistelPermutation(n, 12345);
        var seen = new bool[n];
        for (int i = 0; i < n; i++) { long v = p.Map(i); Assert.False(seen[v]); seen[v] = true; }
    }

    [Fact]
    public void Held_out_samples_read_the_eval_split()
    {
        using var tmp = new TempDir();
        var train = TestDatasets.Numbered(0, 10, 5, 30, 1);
        var eval = TestDatasets.Numbered(1, 10, 5, 30, 2);
        string dir = TestDatasets.Write(tmp["d"], "d", train, 4, eval);
        long[] stream = [.. eval.SelectMany(d => d).Select(t => (long)t)];
        using var h = HeldOutSamples.Open(dir, SeqLen);
        Assert.Equal((stream.Length - 1) / SeqLen, h.Count);
        var buf = new long[SeqLen + 1];
        h.Read(h.Count - 1, buf);
        Assert.Equal(stream.AsSpan((int)(h.Count - 1) * SeqLen, SeqLen + 1).ToArray(), buf);
        Assert.Equal([1L, 3L], h.IndicesForRank(1, 2, 4));
    }
}

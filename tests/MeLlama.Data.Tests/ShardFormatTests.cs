using MeLlama.Data.Datasets;
using MeLlama.Data.Shards;
using MeLlama.TestSupport;

namespace MeLlama.Data.Tests;

public class ShardFormatTests
{
    [Theory]
    [InlineData(TokenDType.UInt16, 8)]
    [InlineData(TokenDType.Int32, 4)]
    public void Writer_output_parses_per_the_Megatron_format(TokenDType dtype, byte code)
    {
        using var tmp = new TempDir();
        var docs = TestDatasets.Numbered(1, 37, 1, 50, seed: 5);
        if (dtype == TokenDType.Int32) docs[3][0] = 70_000; // only representable as int32
        using (var w = new IndexedShardWriter(tmp["s.bin"], dtype, restricted: false))
        {
            foreach (var d in docs) w.Add(d);
            var info = w.Complete();
            Assert.Equal(docs.Sum(d => d.Length), info.Tokens);
            Assert.Equal(new FileInfo(tmp["s.bin"]).Length, info.BinBytes);
        }
        var r = IndependentIdxReader.Read(tmp["s"]);
        Assert.Equal(1UL, r.Version);
        Assert.Equal(code, r.DTypeCode);
        Assert.Equal((ulong)docs.Count, r.SequenceCount);
        Assert.Equal((ulong)docs.Count + 1, r.DocumentIndexCount);
        Assert.Equal(Enumerable.Range(0, docs.Count + 1).Select(i => (long)i), r.DocumentIndices);
        Assert.Equal(docs.Select(d => d.Length), r.Lengths);
        for (int i = 0; i < docs.Count; i++) Assert.Equal(docs[i].Select(t => (long)t), r.Sequences[i]);

        using var reader = IndexedShardReader.Open(tmp["s.bin"]);
        Assert.Equal(docs.Count, reader.DocumentCount);
        for (int i = 0; i < docs.Count; i++) Assert.Equal(docs[i].Select(t => (long)t), reader.ReadSequence(i));
    }

    [Fact]
    public void Empty_shard_is_valid()
    {
        using var tmp = new TempDir();
        using (var w = new IndexedShardWriter(tmp["e.bin"], TokenDType.UInt16, false)) w.Complete();
        var r = IndependentIdxReader.Read(tmp["e"]);
        Assert.Equal(0UL, r.SequenceCount);
        Assert.Equal([0L], r.DocumentIndices);
        using var reader = IndexedShardReader.Open(tmp["e.bin"]);
        Assert.Equal(0, reader.TokenCount);
    }

    [Fact]
    public void Uint16_writer_refuses_ids_that_do_not_fit()
    {
        using var tmp = new TempDir();
        using var w = new IndexedShardWriter(tmp["s.bin"], TokenDType.UInt16, false);
        Assert.Throws<ArgumentOutOfRangeException>(() => w.Add([1, 70_000]));
    }

    [Fact]
    public void Abandoned_writer_leaves_no_files()
    {
        using var tmp = new TempDir();
        using (var w = new IndexedShardWriter(tmp["s.bin"], TokenDType.UInt16, false)) w.Add([1, 2, 3]);
        Assert.Empty(Directory.GetFiles(tmp.Path));
    }

    [Fact]
    public void Truncated_bin_is_an_error_naming_the_file()
    {
        using var tmp = new TempDir();
        string dir = TestDatasets.Write(tmp["ds"], "x", TestDatasets.Numbered(0, 20, 5, 30, 1), docsPerShard: 8);
        string victim = Path.Combine(dir, "train-00001.bin");
        using (var fs = new FileStream(victim, FileMode.Open)) fs.SetLength(fs.Length - 2);
        var e = Assert.Throws<ShardCorruptException>(() => PreparedDataset.Open(dir));
        Assert.Contains("train-00001.bin", e.Message);
    }

    [Fact]
    public void Truncated_idx_is_an_error_naming_the_file()
    {
        using var tmp = new TempDir();
        string dir = TestDatasets.Write(tmp["ds"], "x", TestDatasets.Numbered(0, 20, 5, 30, 1), docsPerShard: 8);
        string victim = Path.Combine(dir, "train-00000.idx");
        using (var fs = new FileStream(victim, FileMode.Open)) fs.SetLength(20);
        var e = Assert.Throws<ShardCorruptException>(() => IndexedShardReader.Open(victim));
        Assert.Contains("train-00000.idx", e.Message);
        Assert.Throws<ShardCorruptException>(() => PreparedDataset.Open(dir));
    }

    [Fact]
    public void Flipped_byte_passes_the_fast_check_and_fails_the_full_one()
    {
        using var tmp = new TempDir();
        string dir = TestDatasets.Write(tmp["ds"], "x", TestDatasets.Numbered(0, 20, 5, 30, 1), docsPerShard: 8);
        string victim = Path.Combine(dir, "train-00002.bin");
        var bytes = File.ReadAllBytes(victim);
        bytes[3] ^= 0x40;
        File.WriteAllBytes(victim, bytes);
        using (PreparedDataset.Open(dir, VerifyLevel.Fast)) { }
        var e = Assert.Throws<ShardCorruptException>(() => PreparedDataset.Open(dir, VerifyLevel.Full));
        Assert.Contains("train-00002.bin", e.Message);
        Assert.Contains("sha256", e.Message);
    }

    [Fact]
    public void Token_sequence_reads_across_shard_boundaries()
    {
        using var tmp = new TempDir();
        var docs = TestDatasets.Numbered(0, 30, 1, 20, 9);
        string dir = TestDatasets.Write(tmp["ds"], "x", docs, docsPerShard: 7);
        long[] all = [.. docs.SelectMany(d => d).Select(t => (long)t)];
        using var ds = PreparedDataset.Open(dir, VerifyLevel.Full);
        Assert.Equal(all.Length, ds.Train.Length);
        var buf = new long[all.Length];
        for (int start = 0; start < all.Length; start += 13)
        {
            int n = Math.Min(41, all.Length - start);
            ds.Train.Read(start, buf.AsSpan(0, n));
            Assert.Equal(all.AsSpan(start, n).ToArray(), buf.AsSpan(0, n).ToArray());
        }
    }
}

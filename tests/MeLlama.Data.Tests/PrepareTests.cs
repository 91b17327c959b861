using System.Text;
using MeLlama.Data.Config;
using MeLlama.Data.Datasets;
using MeLlama.Data.Demo;
using MeLlama.Data.Prepare;
using MeLlama.Data.Readers;
using MeLlama.Data.Shards;
using MeLlama.TestSupport;
using MeLlama.Tokenization;

namespace MeLlama.Data.Tests;

public class PrepareTests
{
    static readonly Lazy<ITextTokenizer> Gpt2 = new(() => TokenizerLoader.Load("gpt2"));

    /// <summary>A small corpus of all three domains with a duplicate across sources; shards capped at 16 KiB so there are several chunks.</summary>
    static DataConfig SmallCorpus(string dir, double shardMb = 1.0 / 64)
    {
        DemoCorpus.WriteSynthetic(dir, docsPerDomain: 120);
        DemoCorpus.WriteGeneral(Path.Combine(dir, "general"), docs: 150);
        // A document that also appears in the biomedical source (exact duplicate after clean-up).
        InputWriters.Write(Path.Combine(dir, "general", "dup.jsonl"),
            "{\"text\": \"  A short note about home gardening.\\tIt is   duplicated  across sources on purpose.  \"}\n");
        InputWriters.Write(Path.Combine(dir, "biomedical", "dup.jsonl"),
            "{\"text\": \"A short note about home gardening. It is duplicated across sources on purpose.\"}\n{\"text\": \"tiny\"}\n{\"text\": \" \\n \"}\n");
        return new DataConfig
        {
            Name = "t",
            ShardMegabytes = shardMb,
            EvalFraction = 0.1,
            Sources =
            [
                new SourceConfig { Name = "bio", Domain = "biomedical", Format = "jsonl", Paths = ["biomedical/*.jsonl*"] },
                new SourceConfig { Name = "notes", Domain = "clinical", Format = "csv", Paths = ["clinical/notes.csv"], Fields = ["TEXT"] },
                new SourceConfig { Name = "web", Domain = "general", Format = "text", TextMode = "paragraph", Paths = ["general/*.txt"] },
                new SourceConfig { Name = "web-dup", Domain = "general", Format = "jsonl", Paths = ["general/dup.jsonl"] },
            ],
            BaseDirectory = dir,
        };
    }

    static Dictionary<string, byte[]> Tree(string dir) =>
        Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(dir, f), File.ReadAllBytes);

    static void AssertSameTree(string a, string b)
    {
        var ta = Tree(a);
        var tb = Tree(b);
        Assert.Equal(ta.Keys.Order(), tb.Keys.Order());
        foreach (var (k, v) in ta) Assert.True(v.AsSpan().SequenceEqual(tb[k]), $"{k} differs");
    }

    [Fact]
    public void Output_bytes_are_the_same_for_one_and_two_threads()
    {
        using var tmp = new TempDir();
        var config = SmallCorpus(tmp["in"]);
        var r1 = PrepareRunner.Run(config, Gpt2.Value, new PrepareOptions(tmp["out1"], Threads: 1));
        var r2 = PrepareRunner.Run(config, Gpt2.Value, new PrepareOptions(tmp["out2"], Threads: 2));
        Assert.True(r1.Chunks >= 3, $"expected several chunks, got {r1.Chunks}");
        Assert.Equal(r1.TokensProcessed, r2.TokensProcessed);
        AssertSameTree(tmp["out1"], tmp["out2"]);
    }

    [Fact]
    public void Counts_dedup_and_drops_are_reported_and_shards_hold_exactly_the_kept_documents()
    {
        using var tmp = new TempDir();
        var config = SmallCorpus(tmp["in"]);
        var result = PrepareRunner.Run(config, Gpt2.Value, new PrepareOptions(tmp["out"], 2));
        var bio = result.Datasets.Single(d => d.Domain == "biomedical");
        var general = result.Datasets.Single(d => d.Domain == "general");
        var clinical = result.Datasets.Single(d => d.Domain == "clinical");
        Assert.Equal(1, bio.Sources[0].Dropped["too_short"]);
        Assert.Equal(1, bio.Sources[0].Dropped["empty"]);
        Assert.Equal(1, general.Sources.Single(s => s.Name == "web-dup").Dropped["duplicate"]);
        Assert.Equal(121, bio.Train.Documents + bio.Eval.Documents);
        Assert.Equal(120, clinical.Train.Documents + clinical.Eval.Documents);
        Assert.InRange(clinical.Eval.Documents, 3, 30); // ≈ 10 % held out by content hash
        Assert.Equal(123, bio.Sources[0].Records);
        Assert.Equal(120, clinical.Sources[0].Records);
        Assert.Equal(151, general.Sources.Sum(s => s.Records));

        // Every kept document, re-tokenized directly, is in the shards in input order with EOS appended.
        using var ds = PreparedDataset.Open(Path.Combine(tmp["out"], "clinical"), VerifyLevel.Full);
        var csvTexts = new List<string>();
        using (var s = InputStreams.Open(Path.Combine(tmp["in"], "clinical", "notes.csv")))
            csvTexts.AddRange(RecordReaders.For(config.Sources[1], 1 << 20).Read(s.Content, "").Select(r => r.Text!));
        var cleaner = new MeLlama.Data.Cleaning.TextCleaner("NFC");
        var expected = new List<long>();
        foreach (var t in csvTexts)
        {
            string clean = cleaner.Clean(t);
            var digest = System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(clean));
            if (DocumentProcessor.IsHeldOut(BitConverter.ToUInt64(digest, 16), 0.1)) continue;
            expected.AddRange(Gpt2.Value.Encode(clean).Select(x => (long)x));
            expected.Add(Gpt2.Value.EosId);
        }
        var actual = new long[ds.Train.Length];
        ds.Train.Read(0, actual);
        Assert.Equal(expected, actual);
        Assert.Equal("uint16", clinical.TokenDType);
        Assert.Equal(Gpt2.Value.Fingerprint, clinical.Tokenizer.Fingerprint);
        Assert.All(clinical.Sources[0].Files, f => Assert.Equal(64, f.Sha256!.Length));
    }

    [SkippableFact]
    public void Clinical_outputs_are_owner_only()
    {
        Skip.If(OperatingSystem.IsWindows(), "Unix file modes");
        if (OperatingSystem.IsWindows()) return;
        using var tmp = new TempDir();
        PrepareRunner.Run(SmallCorpus(tmp["in"]), Gpt2.Value, new PrepareOptions(tmp["out"], 1));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(tmp["out/clinical"]));
        foreach (var f in Directory.GetFiles(tmp["out/clinical"]))
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(f));
        Assert.NotEqual(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(tmp["out/general"], "manifest.json")));
    }

    /// <summary>Tokenizer that fails on a given document: a crash in the middle of a run.</summary>
    sealed class CrashingTokenizer(ITextTokenizer inner, string failOn) : ITextTokenizer
    {
        public string Name => inner.Name;
        public int VocabSize => inner.VocabSize;
        public int BosId => inner.BosId;
        public int EosId => inner.EosId;
        public string Fingerprint => inner.Fingerprint;
        public int[] Encode(string text, bool addBos = false, bool addEos = false) =>
            text.Contains(failOn, StringComparison.Ordinal) ? throw new IOException("simulated crash") : inner.Encode(text, addBos, addEos);
        public string Decode(ReadOnlySpan<int> ids) => inner.Decode(ids);
        public void SaveHfFiles(string directory, string? chatTemplate = null) => inner.SaveHfFiles(directory, chatTemplate);
    }

    [Fact]
    public void A_crashed_run_resumes_from_verified_chunks_to_the_same_bytes()
    {
        using var tmp = new TempDir();
        var config = SmallCorpus(tmp["in"]);
        PrepareRunner.Run(config, Gpt2.Value, new PrepareOptions(tmp["ref"], 2));

        Assert.Throws<IOException>(() => PrepareRunner.Run(config, new CrashingTokenizer(Gpt2.Value, ", number 120."), new PrepareOptions(tmp["out"], 2)));
        int chunksBefore = Directory.GetFiles(tmp["out/.prepare"], "chunk-*.json").Length;
        Assert.True(chunksBefore >= 2, $"the crashed run should have completed some chunks, had {chunksBefore}");
        Assert.False(File.Exists(tmp["out/biomedical/manifest.json"]));
        // Damage a shard of the last completed chunk: it must be redone, the ones before kept.
        var victim = Directory.GetFiles(tmp["out"], $"train-{chunksBefore - 1:D5}.bin", SearchOption.AllDirectories).First();
        File.WriteAllBytes(victim, [1, 2, 3]);

        var resumed = PrepareRunner.Run(config, Gpt2.Value, new PrepareOptions(tmp["out"], 1));
        Assert.Equal(chunksBefore - 1, resumed.ChunksReused);
        AssertSameTree(tmp["ref"], tmp["out"]);

        // A rerun of a finished preparation verifies and changes nothing.
        var again = PrepareRunner.Run(config, Gpt2.Value, new PrepareOptions(tmp["out"], 2));
        Assert.Equal(again.Chunks, again.ChunksReused);
        AssertSameTree(tmp["ref"], tmp["out"]);
    }

    [Fact]
    public void A_different_config_refuses_to_reuse_the_output_folder()
    {
        using var tmp = new TempDir();
        var config = SmallCorpus(tmp["in"]);
        PrepareRunner.Run(config, Gpt2.Value, new PrepareOptions(tmp["out"], 1));
        Assert.Throws<PrepareOutputException>(() => PrepareRunner.Run(config with { MinChars = 5 }, Gpt2.Value, new PrepareOptions(tmp["out"], 1)));
    }

    [Fact]
    public void Demo_corpus_prepares_and_feeds_the_sample_stream()
    {
        using var tmp = new TempDir();
        var (config, shared) = DemoCorpus.Create(tmp["gen"], sharedCorpus: null);
        Assert.False(shared);
        var result = PrepareRunner.Run(config, Gpt2.Value, new PrepareOptions(tmp["out"], 2));
        Assert.Equal(["biomedical", "clinical", "general"], result.Datasets.Select(d => d.Domain));
        var domains = result.Datasets.Select(d => new Sampling.DomainDataset(d.Domain, Path.Combine(tmp["out"], d.Domain), config.Mixture![d.Domain])).ToList();
        using var stream = Sampling.PretrainSampleStream.Open(domains, 128, 1, 0, 1, verify: VerifyLevel.Full);
        var buf = new long[4 * 129];
        stream.NextBatch(4, buf);
        Assert.All(buf, t => Assert.InRange(t, 0, Gpt2.Value.VocabSize - 1));
        foreach (var d in result.Datasets)
            using (var h = Sampling.HeldOutSamples.Open(Path.Combine(tmp["out"], d.Domain), 128)) Assert.True(h.Count > 0, d.Domain);
    }
}

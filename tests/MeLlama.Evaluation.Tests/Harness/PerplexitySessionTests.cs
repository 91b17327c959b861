using MeLlama.Core.IO;
using MeLlama.Data.Datasets;
using MeLlama.Data.Shards;
using MeLlama.Evaluation.Harness;
using MeLlama.Evaluation.Models;
using MeLlama.Evaluation.Reporting;
using MeLlama.Evaluation.Tests.Models;
using MeLlama.TestSupport;
using Serilog.Core;

namespace MeLlama.Evaluation.Tests.Harness;

/// <summary>Held-out perplexity through the session, on a prepared dataset written with the data component's shard writer.</summary>
public class PerplexitySessionTests(TinyLlamaFixture fixture) : IClassFixture<TinyLlamaFixture>
{
    static string WritePrepared(string dir, IReadOnlyList<int[]> evalDocs, string tokenizerFingerprint)
    {
        Directory.CreateDirectory(dir);
        using var writer = new IndexedShardWriter(Path.Combine(dir, "eval-00000.bin"), TokenDType.UInt16, restricted: false);
        foreach (var d in evalDocs) writer.Add(d);
        var shard = writer.Complete();
        var manifest = new DatasetManifest
        {
            Name = "pubmed-heldout", Domain = "biomedical", Sensitivity = "public",
            Tokenizer = new TokenizerInfo("llama2", tokenizerFingerprint, 32000, 2),
            TokenDType = "uint16", Normalization = "NFC", EvalFraction = 1, Sources = [],
            Train = SplitInfo.Empty, Eval = new SplitInfo(shard.Documents, shard.Tokens, [shard]),
        };
        AtomicFile.WriteAllText(Path.Combine(dir, DatasetManifest.FileName), manifest.ToJson());
        return dir;
    }

    [SkippableFact]
    public void Session_reports_per_domain_perplexity_of_prepared_held_out_shards()
    {
        var reference = TinyLlamaFixture.Reference();
        var docs = reference.Select(r => r.Tokens).ToList();
        var all = docs.SelectMany(d => d).ToArray();   // the held-out split is the documents back to back
        using var dir = new TempDir();
        string prepared = WritePrepared(dir["prepared"], docs, fixture.Tokenizer.Fingerprint);
        var lm = new LlamaCausalLanguageModel(fixture.Model, "tiny");
        var model = new EvalModel(new ModelInfo("tiny", "tiny", null, null), null, null, lm, fixture.Tokenizer.Fingerprint);
        var options = new EvalSessionOptions
        {
            Tasks = [], OutDir = dir["out"], DataRoot = dir.Path,
            PerplexityData = [("biomedical", prepared)], PerplexitySeqLen = 32,
            Settings = new EvalSettings { BootstrapResamples = 100 },
        };
        var report = EvalSession.Run(options, model, Logger.None);
        var ppl = Assert.Single(report.Perplexity);
        long windows = (all.Length - 1) / 32;
        Assert.Equal(windows, ppl.Windows);
        Assert.Equal(windows * 32, ppl.Tokens);
        double nll = 0;
        for (int w = 0; w < windows; w++)
            nll -= MeLlama.Model.Scoring.NextTokenLogProbs(fixture.Model, all.Skip(w * 32).Take(33).ToArray()).Sum(v => (double)v);
        Assert.Equal(Math.Exp(nll / (windows * 32)), ppl.Perplexity, 1e-2);
        Assert.Contains("| biomedical |", File.ReadAllText(Path.Combine(options.OutDir, ResultsWriter.MarkdownFile)));

        // A dataset tokenized with another tokenizer is refused rather than scored.
        string other = WritePrepared(dir["other"], docs, "sha256-of-something-else");
        var e = Assert.Throws<InvalidDataException>(() => EvalSession.Run(options with { PerplexityData = [("x", other)] }, model, Logger.None));
        Assert.Contains("tokenized with", e.Message);
    }
}

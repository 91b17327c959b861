using System.Text;
using System.Text.Json;
using MeLlama.Data.Cleaning;
using MeLlama.Data.Config;
using MeLlama.Data.Datasets;
using MeLlama.Data.Demo;
using MeLlama.Data.Prepare;
using MeLlama.TestSupport;
using MeLlama.Tokenization;

namespace MeLlama.Data.Tests;

/// <summary>
/// `prepare` on the real sample corpora in ../shared with the real LLaMA-2 tokenizer, checked against texts
/// extracted here independently (JsonDocument, a whole-file CSV parser) and tokenized directly.
/// </summary>
public class RealCorpusTests
{
    static string CorpusRoot() => Path.GetDirectoryName(SharedData.Require(SharedData.PubMedQa))!.Replace("/pubmedqa", "");

    /// <summary>Whole-file RFC 4180 parser written independently of the streaming one.</summary>
    static List<List<string>> ParseCsv(string text)
    {
        var rows = new List<List<string>>();
        var row = new List<string>();
        var field = new StringBuilder();
        bool quoted = false;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < text.Length && text[i + 1] == '"') { field.Append('"'); i++; }
                else if (c == '"') quoted = false;
                else field.Append(c);
            }
            else if (c == '"') quoted = true;
            else if (c == ',') { row.Add(field.ToString()); field.Clear(); }
            else if (c == '\n' || c == '\r')
            {
                if (c == '\r' && i + 1 < text.Length && text[i + 1] == '\n') i++;
                row.Add(field.ToString()); field.Clear();
                rows.Add(row); row = [];
            }
            else field.Append(c);
        }
        if (field.Length > 0 || row.Count > 0) { row.Add(field.ToString()); rows.Add(row); }
        return rows;
    }

    static IEnumerable<string> CsvTexts(string folder, string[] columns, bool excludeMetadata)
    {
        foreach (var file in Directory.GetFiles(folder, "*.csv").Where(f => !excludeMetadata || !f.EndsWith("_metadata.csv")).Order(StringComparer.Ordinal))
        {
            var rows = ParseCsv(File.ReadAllText(file));
            var idx = columns.Select(c => rows[0].IndexOf(c)).ToArray();
            foreach (var r in rows.Skip(1))
                yield return string.Join("\n\n", idx.Select(i => r[i]).Where(v => v.Length > 0));
        }
    }

    static IEnumerable<string> PubMedQaTexts(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        foreach (var rec in doc.RootElement.EnumerateObject())
        {
            var contexts = rec.Value.GetProperty("CONTEXTS").EnumerateArray().Select(e => e.GetString()!);
            yield return string.Join("\n", string.Join("\n", contexts), rec.Value.GetProperty("LONG_ANSWER").GetString());
        }
    }

    [SkippableFact]
    public void Prepare_on_PubMedQA_ACI_Bench_and_MTS_Dialog_matches_direct_tokenization_and_parses_as_Megatron()
    {
        string corpus = CorpusRoot();
        var llama = TokenizerLoader.Load(SharedData.Require(SharedData.LlamaTokenizer));
        using var tmp = new TempDir();
        var config = new DataConfig
        {
            Name = "real", Tokenizer = "llama", EvalFraction = 0, MinChars = 32, Normalization = "NFC",
            Sources = [.. DemoCorpus.SharedSources(corpus)], BaseDirectory = tmp.Path,
        };
        var result = PrepareRunner.Run(config, llama, new PrepareOptions(tmp["out"], 2));

        // Independent expectation: extract, clean, drop short, de-duplicate across sources in config order, tokenize + EOS.
        var cleaner = new TextCleaner("NFC");
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var perDomain = new Dictionary<string, List<int[]>> { ["biomedical"] = [], ["clinical"] = [] };
        void Add(string domain, IEnumerable<string> texts)
        {
            foreach (var t in texts)
            {
                string clean = cleaner.Clean(t);
                if (clean.Length < 32 || !seen.Add(clean)) continue;
                perDomain[domain].Add([.. llama.Encode(clean), llama.EosId]);
            }
        }
        var pubmed = PubMedQaTexts(Path.Combine(corpus, "pubmedqa", "ori_pqal.json")).ToList();
        Assert.Equal(1000, pubmed.Count);
        Add("biomedical", pubmed);
        Add("clinical", CsvTexts(Path.Combine(corpus, "clinical-notes", "aci-bench"), ["dialogue", "note"], excludeMetadata: true));
        Add("clinical", CsvTexts(Path.Combine(corpus, "clinical-notes", "mts-dialog"), ["section_text", "dialogue"], excludeMetadata: false));

        foreach (var (domain, docs) in perDomain)
        {
            var manifest = result.Datasets.Single(d => d.Domain == domain);
            Assert.Equal(docs.Count, manifest.Train.Documents);
            Assert.Equal(docs.Sum(d => (long)d.Length), manifest.Train.Tokens);
            Assert.Equal(llama.Fingerprint, manifest.Tokenizer.Fingerprint);
            Assert.Equal("uint16", manifest.TokenDType);
            // The shards, read with the independent format reader, hold exactly these documents in order.
            var sequences = manifest.Train.Shards
                .SelectMany(s => IndependentIdxReader.Read(Path.Combine(tmp["out"], domain, Path.ChangeExtension(s.Bin, null))).Sequences)
                .ToList();
            Assert.Equal(docs.Count, sequences.Count);
            for (int i = 0; i < docs.Count; i++) Assert.Equal(docs[i].Select(t => (long)t), sequences[i]);
            var reader = IndependentIdxReader.Read(Path.Combine(tmp["out"], domain, Path.ChangeExtension(manifest.Train.Shards[0].Bin, null)));
            Assert.Equal(8, reader.DTypeCode); // uint16: LLaMA's 32,000 ids < 65,500
        }
        Assert.Equal(1000, result.Datasets.Single(d => d.Domain == "biomedical").Sources[0].Records);
        Assert.Equal("restricted", result.Datasets.Single(d => d.Domain == "clinical").Sensitivity);
    }
}

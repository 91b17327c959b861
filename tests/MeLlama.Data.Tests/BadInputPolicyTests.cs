using System.Text;
using MeLlama.Data.Config;
using MeLlama.Data.Prepare;
using MeLlama.Data.Readers;
using MeLlama.TestSupport;
using MeLlama.Tokenization;

namespace MeLlama.Data.Tests;

/// <summary>Every reader's bad-input cases through the whole `prepare` pipeline, under "skip" and "fail".</summary>
public class BadInputPolicyTests
{
    static readonly Lazy<ITextTokenizer> Gpt2 = new(() => TokenizerLoader.Load("gpt2"));
    const string Good = "A perfectly good document that is long enough to keep.";

    public static TheoryData<string, string> Cases() => new()
    {
        { "jsonl-malformed-line", Problems.MalformedJson },
        { "jsonl-invalid-utf8", Problems.InvalidUtf8 },
        { "jsonl-missing-field", Problems.MissingField },
        { "jsonl-truncated-gzip", Problems.CorruptCompression },
        { "jsonl-truncated-zstd", Problems.CorruptCompression },
        { "jsonl-unreadable", Problems.UnreadableFile },
        { "records-malformed", Problems.MalformedJson },
        { "records-missing-field", Problems.MissingField },
        { "records-invalid-utf8", Problems.InvalidUtf8 },
        { "records-truncated-gzip", Problems.CorruptCompression },
        { "records-unreadable", Problems.UnreadableFile },
        { "csv-missing-column", Problems.MissingColumn },
        { "csv-invalid-utf8", Problems.InvalidUtf8 },
        { "csv-truncated-gzip", Problems.CorruptCompression },
        { "csv-unclosed-quote", Problems.MalformedCsv },
        { "csv-unreadable", Problems.UnreadableFile },
        { "parquet-missing-column", Problems.MissingColumn },
        { "parquet-corrupt", Problems.MalformedParquet },
        { "parquet-unreadable", Problems.UnreadableFile },
        { "text-invalid-utf8", Problems.InvalidUtf8 },
        { "text-truncated-gzip", Problems.CorruptCompression },
        { "text-unreadable", Problems.UnreadableFile },
    };

    /// <summary>Writes a good file and a bad file for <paramref name="kind"/>; returns the source and the bad file's name and line.</summary>
    static (SourceConfig Source, string BadFile, long Line) Build(string dir, string kind)
    {
        string format = kind.Split('-')[0];
        Directory.CreateDirectory(dir);
        var big = string.Concat(Enumerable.Range(0, 4000).Select(i => $"{{\"text\": \"{Good} {i}\"}}\n"));
        switch (kind)
        {
            case "jsonl-malformed-line": WriteJsonl("b.jsonl", $"{{\"text\": \"{Good}\"}}\n{{\"text\": oops}}\n"); return (Src("jsonl"), "b.jsonl", 2);
            case "jsonl-invalid-utf8": InputWriters.Write(P("b.jsonl"), [.. Encoding.UTF8.GetBytes($"{{\"text\": \"{Good}\"}}\n"), .. InputWriters.WithInvalidUtf8("{\"text\": \"x", "\"}\n")]); return (Src("jsonl"), "b.jsonl", 2);
            case "jsonl-missing-field": WriteJsonl("b.jsonl", $"{{\"text\": \"{Good}\"}}\n{{\"body\": \"{Good}\"}}\n"); return (Src("jsonl"), "b.jsonl", 2);
            case "jsonl-truncated-gzip": WriteJsonl("b.jsonl.gz", big); InputWriters.Truncate(P("b.jsonl.gz"), 500); return (Src("jsonl"), "b.jsonl.gz", 0);
            case "jsonl-truncated-zstd": WriteJsonl("b.jsonl.zst", big); InputWriters.Truncate(P("b.jsonl.zst"), 500); return (Src("jsonl"), "b.jsonl.zst", 0);
            case "records-malformed": InputWriters.Write(P("b.json"), $"{{\"1\": {{\"text\": \"{Good}\"}},\n\"2\": {{\"text\" \"{Good}\"}}}}"); return (Src("records"), "b.json", 2);
            case "records-missing-field": InputWriters.Write(P("b.json"), $"[\n{{\"text\": \"{Good}\"}},\n{{\"other\": 1}}\n]"); return (Src("records"), "b.json", 3);
            case "records-invalid-utf8": InputWriters.Write(P("b.json"), [.. Encoding.UTF8.GetBytes($"[\n{{\"text\": \"{Good}\"}},\n"), .. InputWriters.WithInvalidUtf8("{\"text\": \"", "\"}\n]")]); return (Src("records"), "b.json", 3);
            case "records-truncated-gzip": InputWriters.Write(P("b.json.gz"), "[" + string.Join(",\n", Enumerable.Range(0, 4000).Select(i => $"{{\"text\": \"{Good} {i}\"}}")) + "]"); InputWriters.Truncate(P("b.json.gz"), 500); return (Src("records"), "b.json.gz", 0);
            case "csv-missing-column": InputWriters.Write(P("b.csv"), $"id,body\n1,{Good}\n"); return (Src("csv"), "b.csv", 1);
            case "csv-invalid-utf8": InputWriters.Write(P("b.csv"), [.. Encoding.UTF8.GetBytes($"id,text\n1,\"{Good}\"\n"), .. InputWriters.WithInvalidUtf8("2,\"", "\"\n")]); return (Src("csv"), "b.csv", 3);
            case "csv-truncated-gzip": InputWriters.Write(P("b.csv.gz"), "id,text\n" + string.Concat(Enumerable.Range(0, 4000).Select(i => $"{i},\"{Good} {i}\"\n"))); InputWriters.Truncate(P("b.csv.gz"), 500); return (Src("csv"), "b.csv.gz", 0);
            case "csv-unclosed-quote": InputWriters.Write(P("b.csv"), $"id,text\n1,\"{Good}\"\n2,\"{Good}\n3,x\n"); return (Src("csv"), "b.csv", 3);
            case "parquet-missing-column": WriteParquet(P("b.parquet"), "body"); return (Src("parquet"), "b.parquet", 0);
            case "parquet-corrupt": WriteParquet(P("b.parquet"), "text"); InputWriters.Truncate(P("b.parquet"), 40); return (Src("parquet"), "b.parquet", 0);
            case "text-invalid-utf8": InputWriters.Write(P("b.txt"), InputWriters.WithInvalidUtf8(Good + "\n\n", " more")); return (Src("text"), "b.txt", 3);
            case "text-truncated-gzip": InputWriters.Write(P("b.txt.gz"), string.Concat(Enumerable.Range(0, 4000).Select(i => $"{Good} {i}\n\n"))); InputWriters.Truncate(P("b.txt.gz"), 500); return (Src("text"), "b.txt.gz", 0);
        }
        if (kind.EndsWith("-unreadable"))
        {
            string ext = format switch { "records" => "json", "text" => "txt", _ => format };
            File.CreateSymbolicLink(P("b." + ext), P("does-not-exist"));
            return (Src(format), "b." + ext, 0);
        }
        throw new ArgumentException(kind);

        string P(string name) => Path.Combine(dir, name);
        void WriteJsonl(string name, string text) => InputWriters.Write(P(name), text);
        SourceConfig Src(string f)
        {
            string fmt = f == "records" ? "json-records" : f;
            string ext = f switch { "records" => "json", "text" => "txt", _ => f };
            string goodName = "a." + ext;
            switch (fmt)
            {
                case "jsonl": InputWriters.Write(P(goodName), $"{{\"text\": \"{Good}\"}}\n"); break;
                case "json-records": InputWriters.Write(P(goodName), $"{{\"1\": {{\"text\": \"{Good}\"}}}}"); break;
                case "csv": InputWriters.Write(P(goodName), $"id,text\n1,\"{Good}\"\n"); break;
                case "parquet": WriteParquet(P(goodName), "text"); break;
                case "text": InputWriters.Write(P(goodName), Good); break;
            }
            return new SourceConfig { Name = "src", Domain = "biomedical", Format = fmt, Paths = [$"*.{ext}*"], TextMode = "paragraph" };
        }
    }

    static void WriteParquet(string path, string column)
    {
        var field = new Parquet.Schema.DataField<string>(column);
        using var fs = File.Create(path);
        var w = Parquet.ParquetWriter.CreateAsync(new Parquet.Schema.ParquetSchema(field), fs).GetAwaiter().GetResult();
        using (var rg = w.CreateRowGroup()) rg.WriteAsync(field, [Good, Good + " two"]).GetAwaiter().GetResult();
        w.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    static DataConfig Config(string dir, SourceConfig source) => new() { Name = "bad", Sources = [source], BaseDirectory = dir, EvalFraction = 0 };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Skip_policy_keeps_good_documents_and_reports_the_problem_with_file_and_line(string kind, string problem)
    {
        using var tmp = new TempDir();
        var (source, badFile, line) = Build(tmp["in"], kind);
        var result = PrepareRunner.Run(Config(tmp["in"], source), Gpt2.Value, new PrepareOptions(tmp["out"], 2));
        var report = result.Datasets.Single().Sources.Single();
        Assert.True(report.Documents >= 1, "the good file's documents are kept");
        var p = Assert.Single(report.Problems, x => x.File.EndsWith(badFile) && x.Reason.StartsWith(problem));
        if (line > 0) Assert.Equal(line, p.Line);
        Assert.True(report.Dropped.ContainsKey(problem) || report.Dropped.ContainsKey("file:" + problem), string.Join(",", report.Dropped.Keys));
        if (report.Dropped.ContainsKey("file:" + problem))
            Assert.Contains(report.Files, f => f.Path.EndsWith(badFile) && f.Status == "failed");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Fail_policy_stops_with_an_error_naming_file_line_and_problem(string kind, string problem)
    {
        using var tmp = new TempDir();
        var (source, badFile, line) = Build(tmp["in"], kind);
        var e = Assert.Throws<PrepareInputException>(() =>
            PrepareRunner.Run(Config(tmp["in"], source with { OnError = "fail" }), Gpt2.Value, new PrepareOptions(tmp["out"], 2)));
        Assert.Equal(problem, e.Problem);
        Assert.Contains(badFile, e.Message);
        if (line > 0) Assert.Contains($"line {line}", e.Message);
        Assert.False(File.Exists(Path.Combine(tmp["out"], "biomedical", "manifest.json")));
    }
}

using System.Text;
using MeLlama.Data.Config;
using MeLlama.Data.Readers;
using MeLlama.TestSupport;

namespace MeLlama.Data.Tests;

public class ReaderTests
{
    static SourceConfig Source(string format, params string[] fields) => new()
    {
        Name = "t", Paths = ["x"], Format = format, Domain = "general", Fields = fields.Length == 0 ? null : fields,
    };

    static List<SourceRecord> ReadAll(SourceConfig source, string path, int maxBytes = 1 << 20)
    {
        if (source.Format == "parquet")
        {
            using var fs = File.OpenRead(path); // Parquet needs a seekable file, as CorpusScanner gives it
            return [.. RecordReaders.For(source, maxBytes).Read(fs, path)];
        }
        using var streams = InputStreams.Open(path);
        return [.. RecordReaders.For(source, maxBytes).Read(streams.Content, path)];
    }

    static List<SourceRecord> ReadUntilError(SourceConfig source, string path, out InputFileException? error)
    {
        var result = new List<SourceRecord>();
        error = null;
        try
        {
            using var streams = InputStreams.Open(path);
            foreach (var r in RecordReaders.For(source, 1 << 20).Read(streams.Content, path)) result.Add(r);
        }
        catch (InputFileException e) { error = e; }
        return result;
    }

    [Theory]
    [InlineData("a.jsonl")]
    [InlineData("a.jsonl.gz")]
    [InlineData("a.jsonl.zst")]
    public void Jsonl_reads_good_lines_and_flags_bad_ones_with_their_line(string name)
    {
        using var tmp = new TempDir();
        var content = new List<byte>();
        content.AddRange(Encoding.UTF8.GetBytes("{\"text\": \"first doc\", \"id\": 1}\n\n"));
        content.AddRange(Encoding.UTF8.GetBytes("{\"text\": \"broken\" \n"));                  // line 3: malformed
        content.AddRange(Encoding.UTF8.GetBytes("{\"id\": 7}\r\n"));                              // line 4: missing field
        content.AddRange(InputWriters.WithInvalidUtf8("{\"text\": \"bad ", "bytes\"}\n"));      // line 5: invalid UTF-8
        content.AddRange(Encoding.UTF8.GetBytes("{\"text\": [\"a\", \"b\"], \"x\": {\"y\": [1]}}\n")); // line 6: array joined
        content.AddRange(Encoding.UTF8.GetBytes("{\"text\": {\"nested\": 1}}\n"));                 // line 7: not text
        content.AddRange(Encoding.UTF8.GetBytes("{\"text\": \"last \\u00e9\"}"));                  // line 8, no final newline
        string path = InputWriters.Write(tmp[name], content.ToArray());
        var records = ReadAll(Source("jsonl"), path);
        Assert.Equal(
            [(1L, "first doc", null), (3L, null, Problems.MalformedJson), (4L, null, Problems.MissingField), (5L, null, Problems.InvalidUtf8),
             (6L, "a\nb", null), (7L, null, Problems.FieldNotText), (8L, "last é", null)],
            records.Select(r => (r.Line, r.Text, r.Problem)).ToList<(long, string?, string?)>());
    }

    [Theory]
    [InlineData("a.jsonl.gz")]
    [InlineData("a.jsonl.zst")]
    public void Truncated_compressed_input_is_a_file_level_error(string name)
    {
        using var tmp = new TempDir();
        var sb = new StringBuilder();
        var rng = new Random(3);
        for (int i = 0; i < 3000; i++) sb.Append($"{{\"text\": \"document {i} {rng.Next()} {rng.Next()}\"}}\n");
        string path = InputWriters.Write(tmp[name], sb.ToString());
        InputWriters.Truncate(path, (int)(new FileInfo(path).Length / 3));
        var records = ReadUntilError(Source("jsonl"), path, out var error);
        Assert.NotNull(error);
        Assert.Equal(Problems.CorruptCompression, error.Problem);
        Assert.InRange(records.Count, 0, 2999);
    }

    [Fact]
    public void Gzip_check_accepts_an_intact_file()
    {
        using var tmp = new TempDir();
        string path = InputWriters.Write(tmp["a.jsonl.gz"], string.Concat(Enumerable.Range(0, 5000).Select(i => $"{{\"text\": \"d{i}\"}}\n")));
        Assert.Equal(5000, ReadAll(Source("jsonl"), path).Count(r => r.Text != null));
    }

    [Fact]
    public void Json_records_stream_an_object_of_records_across_buffer_refills()
    {
        using var tmp = new TempDir();
        var sb = new StringBuilder("{\n");
        const int n = 4000; // ≈ 3 MB: several 1 MiB buffer refills
        for (int i = 0; i < n; i++)
        {
            sb.Append($"  \"{i}\": {{\n    \"QUESTION\": \"q{i}\",\n    \"CONTEXTS\": [\"ctx {i} a {new string('x', 300)}\", \"ctx {i} b\"],\n    \"LONG_ANSWER\": \"ans {i}\"\n  }}");
            sb.Append(i + 1 < n ? ",\n" : "\n");
        }
        sb.Append('}');
        string path = InputWriters.Write(tmp["r.json"], sb.ToString());
        var records = ReadAll(Source("json-records", "CONTEXTS", "LONG_ANSWER"), path);
        Assert.Equal(n, records.Count);
        for (int i = 0; i < n; i += 397)
        {
            Assert.Equal($"ctx {i} a {new string('x', 300)}\nctx {i} b\nans {i}", records[i].Text);
            Assert.Equal(2 + 5L * i, records[i].Line); // each record spans 5 lines, the first starts on line 2
        }
    }

    [Fact]
    public void Json_records_flags_bad_records_and_stops_at_broken_syntax()
    {
        using var tmp = new TempDir();
        var bytes = new List<byte>();
        bytes.AddRange(Encoding.UTF8.GetBytes("[\n{\"text\": \"one\"},\n{\"other\": 1},\n"));
        bytes.AddRange(InputWriters.WithInvalidUtf8("{\"text\": \"x", "\"},\n"));
        bytes.AddRange(Encoding.UTF8.GetBytes("{\"text\": \"four\"},\n{\"text\": \"five\" \"oops\": 1},\n{\"text\": \"never\"}\n]"));
        string path = InputWriters.Write(tmp["r.json"], bytes.ToArray());
        var records = ReadUntilError(Source("json-records"), path, out var error);
        Assert.Equal([(2L, "one", null), (3L, null, Problems.MissingField), (4L, null, Problems.InvalidUtf8), (5L, "four", null)],
            records.Select(r => (r.Line, r.Text, r.Problem)).ToList<(long, string?, string?)>());
        Assert.NotNull(error);
        Assert.Equal(Problems.MalformedJson, error.Problem);
    }

    [Fact]
    public void Json_records_truncated_file_is_a_file_level_error_after_the_complete_records()
    {
        using var tmp = new TempDir();
        string path = InputWriters.Write(tmp["r.json.gz"], "{\"a\": {\"text\": \"one\"}, \"b\": {\"text\": \"two\"}, \"c\": {\"text\": \"thr");
        var records = ReadUntilError(Source("json-records"), path, out var error);
        Assert.Equal(["one", "two"], records.Select(r => r.Text));
        Assert.Equal(Problems.MalformedJson, error?.Problem);
    }

    [Fact]
    public void Csv_handles_quotes_embedded_newlines_and_crlf()
    {
        using var tmp = new TempDir();
        string csv = "ROW_ID,CATEGORY,TEXT\r\n" +
                     "1,Discharge,\"Admission Date: [**2101-10-20**]\r\n\r\nHistory: \"\"quoted\"\", with, commas\"\r\n" +
                     "2,Radiology,plain text\r\n" +
                     "3,Nursing,\"\"\r\n" +
                     "4,Echo,\"last\nline\"";
        string path = InputWriters.Write(tmp["notes.csv.gz"], csv);
        var records = ReadAll(Source("csv", "TEXT"), path);
        Assert.Equal([
            (2L, "Admission Date: [**2101-10-20**]\r\n\r\nHistory: \"quoted\", with, commas"),
            (5L, "plain text"), (6L, ""), (7L, "last\nline")],
            records.Select(r => (r.Line, r.Text!)).ToList());
    }

    [Fact]
    public void Csv_joins_several_columns_and_flags_bad_records()
    {
        using var tmp = new TempDir();
        var bytes = new List<byte>();
        bytes.AddRange(Encoding.UTF8.GetBytes("id,a,b\n1,x,y\n2,only-two-fields\n3,\"q\"junk,z\n"));
        bytes.AddRange(InputWriters.WithInvalidUtf8("4,", ",w\n"));
        bytes.AddRange(Encoding.UTF8.GetBytes("5,p,q\n"));
        string path = InputWriters.Write(tmp["t.csv"], bytes.ToArray());
        var source = Source("csv", "a", "b") with { Joiner = " | " };
        var records = ReadAll(source, path);
        Assert.Equal([(2L, "x | y", null), (3L, null, Problems.MalformedCsv), (4L, null, Problems.MalformedCsv), (5L, null, Problems.InvalidUtf8), (6L, "p | q", null)],
            records.Select(r => (r.Line, r.Text, r.Problem)).ToList<(long, string?, string?)>());
    }

    [Fact]
    public void Csv_missing_column_and_unclosed_quote_are_file_level_errors()
    {
        using var tmp = new TempDir();
        string a = InputWriters.Write(tmp["a.csv"], "id,note\n1,x\n");
        ReadUntilError(Source("csv", "TEXT"), a, out var e1);
        Assert.Equal(Problems.MissingColumn, e1?.Problem);
        string b = InputWriters.Write(tmp["b.csv"], "id,text\n1,fine\n2,\"never closed\n3,x\n");
        var records = ReadUntilError(Source("csv"), b, out var e2);
        Assert.Equal(["fine"], records.Select(r => r.Text));
        Assert.Equal(Problems.MalformedCsv, e2?.Problem);
        Assert.Equal(3, e2!.Line);
    }

    [Fact]
    public async Task Parquet_reads_a_text_column_row_group_by_row_group()
    {
        using var tmp = new TempDir();
        var field = new Parquet.Schema.DataField<string>("text");
        var idField = new Parquet.Schema.DataField<int>("id");
        var schema = new Parquet.Schema.ParquetSchema(field, idField);
        string path = tmp["p.parquet"];
        await using (var fs = File.Create(path))
        await using (var w = await Parquet.ParquetWriter.CreateAsync(schema, fs))
        {
            for (int g = 0; g < 3; g++)
            {
                using var rg = w.CreateRowGroup();
                await rg.WriteAsync(field, Enumerable.Range(0, 10).Select(i => (string?)$"group {g} row {i}").ToArray());
                await rg.WriteAsync<int>(idField, (ReadOnlyMemory<int>)Enumerable.Range(0, 10).ToArray());
            }
        }
        var records = ReadAll(Source("parquet"), path);
        Assert.Equal(30, records.Count);
        Assert.Equal("group 2 row 9", records[^1].Text);
        Assert.Equal(30, records[^1].Line);
        var error = Assert.Throws<InputFileException>(() => ReadAll(Source("parquet", "body"), path));
        Assert.Equal(Problems.MissingColumn, error.Problem);
        string junk = InputWriters.Write(tmp["junk.parquet"], "not parquet at all");
        Assert.Equal(Problems.MalformedParquet, Assert.Throws<InputFileException>(() => ReadAll(Source("parquet"), junk)).Problem);
    }

    [Theory]
    [InlineData("file", new[] { "para one\nstill one\n\npara two\n\n\nline three" })]
    [InlineData("paragraph", new[] { "para one\nstill one", "para two", "line three" })]
    [InlineData("line", new[] { "para one", "still one", "para two", "line three" })]
    public void Plain_text_modes(string mode, string[] expected)
    {
        using var tmp = new TempDir();
        string path = InputWriters.Write(tmp["a.txt"], "para one\nstill one\n\npara two\n\n\nline three");
        var records = ReadAll(Source("text") with { TextMode = mode }, path);
        Assert.Equal(expected, records.Select(r => r.Text));
    }

    [Fact]
    public void Globs_folders_and_excludes_expand_sorted()
    {
        using var tmp = new TempDir();
        foreach (var f in new[] { "a/x.csv", "a/x_metadata.csv", "a/b/y.csv", "a/b/z.txt", "c.csv" }) InputWriters.Write(tmp[f], "x");
        var (files, missing) = InputFiles.Expand(["a/**/*.csv", "c.csv", "nothing/*.csv"], ["*_metadata.csv"], tmp.Path);
        Assert.Equal(new[] { "a/b/y.csv", "a/x.csv", "c.csv" }.Select(f => tmp[f]), files);
        Assert.Equal(["nothing/*.csv"], missing);
        var (folder, _) = InputFiles.Expand(["a"], [], tmp.Path);
        Assert.Equal(4, folder.Count);
    }
}

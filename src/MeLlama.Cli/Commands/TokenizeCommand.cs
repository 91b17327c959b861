using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using MeLlama.Core.IO;
using MeLlama.Core.Logging;
using MeLlama.Tokenization;
using Serilog;

namespace MeLlama.Cli.Commands;

/// <summary>
/// <c>mellama tokenize --tokenizer SPEC [--input FILE] [--output FILE] [--bos] [--eos]</c>: JSON lines with a
/// "text" field in, the same objects with "ids" added out (other fields kept, in order).
/// </summary>
public static class TokenizeCommand
{
    /// <summary>Lines parsed, then encoded in parallel, then written in order, per batch.</summary>
    const int BatchLines = 512;

    static readonly Option<string> TokenizerOption = new("--tokenizer", "-t")
    {
        Description = "\"gpt2\" (built-in), a SentencePiece tokenizer.model, or an HF model folder",
        Required = true,
    };
    static readonly Option<FileInfo?> InputOption = new("--input", "-i") { Description = "JSON lines file (default: stdin)" };
    static readonly Option<FileInfo?> OutputOption = new("--output", "-o") { Description = "Write here atomically instead of stdout (nothing is left on failure)" };
    static readonly Option<bool> BosOption = new("--bos") { Description = "Prepend the BOS id" };
    static readonly Option<bool> EosOption = new("--eos") { Description = "Append the EOS id" };

    public static Command Create()
    {
        var command = new Command("tokenize", "Tokenize JSON lines with a \"text\" field into JSON lines with \"ids\"");
        command.Options.Add(TokenizerOption);
        command.Options.Add(InputOption);
        command.Options.Add(OutputOption);
        command.Options.Add(BosOption);
        command.Options.Add(EosOption);
        command.SetAction(Execute);
        return command;
    }

    static int Execute(ParseResult parse)
    {
        using var log = LogSetup.Create(GlobalOptions.LogOptions(parse));
        var stderr = parse.InvocationConfiguration.Error;
        var stdout = parse.InvocationConfiguration.Output;
        var input = parse.GetValue(InputOption);
        var output = parse.GetValue(OutputOption);
        bool bos = parse.GetValue(BosOption), eos = parse.GetValue(EosOption);

        ITextTokenizer tokenizer;
        try { tokenizer = TokenizerLoader.Load(parse.GetValue(TokenizerOption)!); }
        catch (Exception e)
        {
            return CommandFailures.Report(e, stderr, "tokenize: cannot load tokenizer", log: log);
        }
        if (input is { Exists: false })
        {
            stderr.WriteLine($"mellama tokenize: input file '{input.FullName}' does not exist");
            return 2;
        }
        log.Information("Tokenizing with {Tokenizer} (sha256 {Fingerprint}), input {Input}", tokenizer.Name, tokenizer.Fingerprint, input?.FullName ?? "stdin");

        var watch = Stopwatch.StartNew();
        try
        {
            var counts = JsonLinesStreams.Transform(input, output, stdout, (r, w) => Run(tokenizer, r, w, bos, eos));
            log.Information("Tokenized {Lines} lines into {Tokens} tokens in {Seconds:F2}s", counts.Lines, counts.Tokens, watch.Elapsed.TotalSeconds);
            return 0;
        }
        catch (TokenizeInputException e)
        {
            stderr.WriteLine($"mellama tokenize: {input?.FullName ?? "stdin"}: {e.Message}");
            log.Error("Bad input at line {Line}; stopped", e.LineNumber);
            return 2;
        }
        catch (Exception e)
        {
            return CommandFailures.Report(e, stderr, "tokenize", readingInput: false, log: log);
        }
    }

    public readonly record struct Counts(long Lines, long Tokens);

    /// <summary>The command's work, free of console and files: reads JSON lines, writes them back with "ids".</summary>
    /// <exception cref="TokenizeInputException">A line is not a JSON object with a string "text"; names the line.</exception>
    public static Counts Run(ITextTokenizer tokenizer, TextReader input, TextWriter output, bool addBos, bool addEos)
    {
        long lineNumber = 0, lines = 0, tokens = 0;
        var batch = new List<(long Line, JsonDocument Doc, string Text)>(BatchLines);
        var ids = new int[BatchLines][];
        var buffer = new ArrayBufferWriterStream();
        try
        {
            while (true)
            {
                string? line = null;
                while (batch.Count < BatchLines && (line = input.ReadLine()) != null)
                {
                    lineNumber++;
                    if (string.IsNullOrWhiteSpace(line)) continue;
                    batch.Add(Parse(line, lineNumber));
                }
                if (batch.Count == 0) break;
                Parallel.For(0, batch.Count, i => ids[i] = tokenizer.Encode(batch[i].Text, addBos, addEos));
                for (int i = 0; i < batch.Count; i++)
                {
                    WriteLine(batch[i].Doc.RootElement, ids[i], buffer, output);
                    tokens += ids[i].Length;
                    batch[i].Doc.Dispose();
                }
                lines += batch.Count;
                batch.Clear();
                if (line == null) break;
            }
        }
        finally
        {
            foreach (var item in batch) item.Doc.Dispose();
        }
        return new Counts(lines, tokens);
    }

    static (long, JsonDocument, string) Parse(string line, long lineNumber)
    {
        JsonDocument doc;
        // The JSON reader's message can quote input characters; ours names only the line and position.
        try { doc = JsonDocument.Parse(line); }
        catch (JsonException e) { throw new TokenizeInputException(lineNumber, $"line {lineNumber}: not valid JSON (error at byte {e.BytePositionInLine})"); }
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            doc.Dispose();
            throw new TokenizeInputException(lineNumber, $"line {lineNumber}: expected a JSON object, got {doc.RootElement.ValueKind}");
        }
        if (!doc.RootElement.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
        {
            doc.Dispose();
            throw new TokenizeInputException(lineNumber, $"line {lineNumber}: field \"text\" is missing or not a string");
        }
        return (lineNumber, doc, text.GetString()!);
    }

    static void WriteLine(JsonElement record, int[] ids, ArrayBufferWriterStream buffer, TextWriter output)
    {
        buffer.Reset();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            foreach (var property in record.EnumerateObject())
            {
                if (property.NameEquals("ids")) continue; // replaced below
                property.WriteTo(writer);
            }
            writer.WriteStartArray("ids");
            foreach (int id in ids) writer.WriteNumberValue(id);
            writer.WriteEndArray();
            writer.WriteEndObject();
        }
        output.WriteLine(Encoding.UTF8.GetString(buffer.WrittenSpan));
    }

    /// <summary>A reusable in-memory stream for one output line.</summary>
    sealed class ArrayBufferWriterStream : MemoryStream
    {
        public void Reset() => SetLength(0);
        public ReadOnlySpan<byte> WrittenSpan => GetBuffer().AsSpan(0, (int)Length);
    }
}

/// <summary>Bad input for <see cref="TokenizeCommand"/>; the message names the line, never its content.</summary>
public sealed class TokenizeInputException(long lineNumber, string message) : Exception(message)
{
    public long LineNumber { get; } = lineNumber;
}

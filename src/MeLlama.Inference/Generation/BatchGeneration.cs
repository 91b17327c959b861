using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using MeLlama.Inference.ChatTemplates;

namespace MeLlama.Inference.Generation;

/// <summary>Counts of a batch run.</summary>
public sealed record BatchSummary(int Records, long GeneratedTokens, double Seconds, IReadOnlyDictionary<FinishReason, int> Finishes)
{
    public double TokensPerSecond => GeneratedTokens / Math.Max(Seconds, 1e-9);
}

/// <summary>
/// Generation over a JSON Lines file: every record is checked first (a bad one stops the run before any output, naming
/// its line and field), then each gets a "completion" field (its other fields are kept) and is written as one line.
/// </summary>
public static class BatchGeneration
{
    // Keep non-ASCII text (accents, CJK) readable in the output instead of \uXXXX escapes; still valid JSON.
    static readonly JsonSerializerOptions OutputJson = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public sealed record Item(int Line, JsonObject Record, IReadOnlyList<ChatMessage> Messages);

    /// <summary>Parses and checks every record of <paramref name="path"/>; <see cref="InvalidDataException"/> names file:line.</summary>
    public static List<Item> ReadInput(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"input file {path} does not exist", path);
        var items = new List<Item>();
        int line = 0;
        foreach (var text in File.ReadLines(path, Encoding.UTF8))
        {
            line++;
            if (text.Trim().Length == 0) continue;
            JsonObject record;
            try { record = JsonNode.Parse(text) as JsonObject ?? throw new FormatException("record is not a JSON object"); }
            // The parser's own message quotes the offending text; name only the position (records may hold clinical text).
            catch (JsonException e) { throw new InvalidDataException($"{path}:{line}: not valid JSON (at byte {e.BytePositionInLine})"); }
            catch (FormatException e) { throw new InvalidDataException($"{path}:{line}: {e.Message}"); }
            if (record.ContainsKey("completion")) throw new InvalidDataException($"{path}:{line}: record already has a \"completion\" field (it would be overwritten)");
            try { items.Add(new Item(line, record, PromptRecords.ToMessages(record))); }
            catch (FormatException e) { throw new InvalidDataException($"{path}:{line}: {e.Message}"); }
        }
        return items;
    }

    /// <summary>
    /// Generates for every item and writes one JSON line each to <paramref name="output"/>, in input order.
    /// <paramref name="batchSize"/> consecutive items run as one batch (<see cref="TextGenerator.GenerateBatch"/>).
    /// </summary>
    public static BatchSummary Run(IReadOnlyList<Item> items, TextGenerator generator, IChatTemplate template, GenerationOptions options, TextWriter output,
        Action<int, GenerationResult>? onRecord = null, CancellationToken cancel = default, int batchSize = 1)
    {
        if (batchSize < 1) throw new ArgumentException($"batch size must be >= 1 (got {batchSize})");
        var timer = System.Diagnostics.Stopwatch.StartNew();
        long tokens = 0;
        var finishes = new Dictionary<FinishReason, int>();
        int done = 0;
        foreach (var chunk in items.Chunk(batchSize))
        {
            if (cancel.IsCancellationRequested) break;
            var prompts = chunk.Select(item => (IReadOnlyList<int>)ChatEncoder.EncodePrompt(template, generator.Tokenizer, item.Messages)).ToList();
            var results = generator.GenerateBatch(prompts, options, cancel);
            for (int i = 0; i < chunk.Length; i++)
            {
                var result = results[i];
                // A batch cut short by the stop signal is not written: its rows are unfinished.
                if (result.Finish == FinishReason.Cancelled) break;
                var record = chunk[i].Record.DeepClone().AsObject();
                record["completion"] = result.Text;
                output.WriteLine(record.ToJsonString(OutputJson));
                tokens += result.GeneratedIds.Length;
                finishes[result.Finish] = finishes.GetValueOrDefault(result.Finish) + 1;
                done++;
                onRecord?.Invoke(done, result);
            }
        }
        output.Flush();
        return new BatchSummary(done, tokens, timer.Elapsed.TotalSeconds, finishes);
    }
}

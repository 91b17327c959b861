using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using MeLlama.Core.IO;
using MeLlama.Core.Logging;
using MeLlama.Model;
using MeLlama.Tokenization;
using TorchSharp;
using DeviceType = TorchSharp.DeviceType;

namespace MeLlama.Cli.Commands;

/// <summary>
/// <c>mellama score --model HF_DIR [--input FILE] [--output FILE] [--dtype fp32|bf16] [--device cpu|cuda]</c>:
/// JSON lines with "tokens" (int list) or "text" in; the same objects out with "logprobs" (entry i = log
/// p(token i+1 | tokens 0..i)) and "sum_logprob" added. "text" is encoded with the model folder's tokenizer,
/// with BOS prepended (as LLaMA saw documents in training), and the ids are added as "tokens".
/// </summary>
public static class ScoreCommand
{
    static readonly Option<string> ModelOption = new("--model", "-m") { Description = "Hugging Face model folder (config.json + safetensors)", Required = true };
    static readonly Option<FileInfo?> InputOption = new("--input", "-i") { Description = "JSON lines file (default: stdin)" };
    static readonly Option<FileInfo?> OutputOption = new("--output", "-o") { Description = "Write here atomically instead of stdout (nothing is left on failure)" };
    static readonly Option<string> DtypeOption = new("--dtype") { Description = "Compute dtype: fp32 (default) or bf16", DefaultValueFactory = _ => "fp32" };
    static readonly Option<string> DeviceOption = new("--device") { Description = "cpu (default) or cuda[:N]", DefaultValueFactory = _ => "cpu" };

    public static Command Create()
    {
        var command = new Command("score", "Per-token log-probabilities of JSON lines (\"tokens\" or \"text\") under an HF LLaMA model");
        command.Options.Add(ModelOption);
        command.Options.Add(InputOption);
        command.Options.Add(OutputOption);
        command.Options.Add(DtypeOption);
        command.Options.Add(DeviceOption);
        command.SetAction(Execute);
        return command;
    }

    static int Execute(ParseResult parse)
    {
        using var log = LogSetup.Create(GlobalOptions.LogOptions(parse));
        var stderr = parse.InvocationConfiguration.Error;
        var stdout = parse.InvocationConfiguration.Output;
        string modelDir = parse.GetValue(ModelOption)!;
        var input = parse.GetValue(InputOption);
        var output = parse.GetValue(OutputOption);

        torch.ScalarType dtype;
        torch.Device device;
        try
        {
            dtype = SafeTensorsDtype.ParseModelDtype(parse.GetValue(DtypeOption)!);
            device = torch.device(parse.GetValue(DeviceOption)!);
        }
        catch (Exception e)
        {
            return CommandFailures.Report(e, stderr, "score", log: log);
        }
        if (device.type == DeviceType.CUDA && !torch.cuda.is_available())
        {
            stderr.WriteLine("mellama score: --device cuda asked for, but CUDA is not available in this build or machine");
            return 2;
        }
        if (input is { Exists: false })
        {
            stderr.WriteLine($"mellama score: input file '{input.FullName}' does not exist");
            return 2;
        }

        LlamaForCausalLM model;
        var watch = Stopwatch.StartNew();
        try
        {
            model = HfCheckpoint.LoadModel(modelDir, device, dtype);
        }
        catch (Exception e)
        {
            return CommandFailures.Report(e, stderr, "score: cannot load model", log: log);
        }
        using var _ = model;
        model.eval();
        log.Information("Loaded {Model} ({Parameters:N0} parameters, {Dtype} on {Device}) in {Seconds:F1}s",
            modelDir, model.Config.ParameterCount(), dtype, device, watch.Elapsed.TotalSeconds);

        // The tokenizer is only needed (and only loaded) when a line has "text".
        var tokenizer = new Lazy<ITextTokenizer?>(() => TokenizerLoader.TryLoadFromModelFolder(modelDir));
        watch.Restart();
        try
        {
            var counts = JsonLinesStreams.Transform(input, output, stdout, (r, w) => Run(model, () => tokenizer.Value, r, w));
            log.Information("Scored {Lines} sequences, {Tokens} predicted tokens in {Seconds:F2}s", counts.Lines, counts.Tokens, watch.Elapsed.TotalSeconds);
            return 0;
        }
        catch (ScoreInputException e)
        {
            stderr.WriteLine($"mellama score: {input?.FullName ?? "stdin"}: {e.Message}");
            log.Error("Bad input at line {Line}; stopped", e.LineNumber);
            return 2;
        }
        catch (Exception e)
        {
            // The tokenizer loads lazily here, so a bad tokenizer file shows up as bad input (2); other I/O failures are 1.
            return CommandFailures.Report(e, stderr, "score", readingInput: false, log: log);
        }
    }

    public readonly record struct Counts(long Lines, long Tokens);

    /// <summary>The command's work, free of console and files.</summary>
    /// <param name="tokenizer">Gives the tokenizer for "text" lines (null: the model has none).</param>
    /// <exception cref="ScoreInputException">A line is malformed; the message names the line and field, never the text.</exception>
    public static Counts Run(LlamaForCausalLM model, Func<ITextTokenizer?> tokenizer, TextReader input, TextWriter output)
    {
        long lineNumber = 0, lines = 0, tokens = 0;
        var buffer = new MemoryStream();
        string? line;
        while ((line = input.ReadLine()) != null)
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            using var doc = Parse(line, lineNumber);
            var (ids, fromText) = Tokens(doc.RootElement, model.Config, tokenizer, lineNumber);
            float[] logProbs = Scoring.NextTokenLogProbs(model, ids);
            WriteLine(doc.RootElement, fromText ? ids : null, logProbs, buffer, output);
            lines++;
            tokens += logProbs.Length;
        }
        return new Counts(lines, tokens);
    }

    static JsonDocument Parse(string line, long lineNumber)
    {
        JsonDocument doc;
        // The JSON reader's message can quote input characters; ours names only the line and position.
        try { doc = JsonDocument.Parse(line); }
        catch (JsonException e) { throw new ScoreInputException(lineNumber, $"line {lineNumber}: not valid JSON (error at byte {e.BytePositionInLine})"); }
        if (doc.RootElement.ValueKind == JsonValueKind.Object) return doc;
        var kind = doc.RootElement.ValueKind;
        doc.Dispose();
        throw new ScoreInputException(lineNumber, $"line {lineNumber}: expected a JSON object, got {kind}");
    }

    static (int[] Ids, bool FromText) Tokens(JsonElement record, LlamaConfig config, Func<ITextTokenizer?> tokenizer, long lineNumber)
    {
        int[] ids;
        bool fromText = false;
        if (record.TryGetProperty("tokens", out var list))
        {
            if (list.ValueKind != JsonValueKind.Array)
                throw new ScoreInputException(lineNumber, $"line {lineNumber}: field \"tokens\" must be a list of integers");
            ids = new int[list.GetArrayLength()];
            int i = 0;
            foreach (var item in list.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out ids[i]))
                    throw new ScoreInputException(lineNumber, $"line {lineNumber}: \"tokens\"[{i}] is not an integer");
                i++;
            }
        }
        else if (record.TryGetProperty("text", out var text))
        {
            if (text.ValueKind != JsonValueKind.String)
                throw new ScoreInputException(lineNumber, $"line {lineNumber}: field \"text\" must be a string");
            var tok = tokenizer() ?? throw new ScoreInputException(lineNumber, $"line {lineNumber}: has \"text\" but the model folder has no tokenizer; give \"tokens\" instead");
            ids = tok.Encode(text.GetString()!, addBos: true);
            fromText = true;
        }
        else throw new ScoreInputException(lineNumber, $"line {lineNumber}: needs a \"tokens\" list or a \"text\" string");

        for (int i = 0; i < ids.Length; i++)
            if (ids[i] < 0 || ids[i] >= config.VocabSize)
                throw new ScoreInputException(lineNumber, $"line {lineNumber}: token {i} has id {ids[i]}, outside the vocabulary [0, {config.VocabSize})");
        if (ids.Length > config.MaxPositionEmbeddings)
            throw new ScoreInputException(lineNumber, $"line {lineNumber}: {ids.Length} tokens exceed the model's {config.MaxPositionEmbeddings} positions");
        return (ids, fromText);
    }

    static void WriteLine(JsonElement record, int[]? tokens, float[] logProbs, MemoryStream buffer, TextWriter output)
    {
        buffer.SetLength(0);
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            foreach (var property in record.EnumerateObject())
            {
                if (property.NameEquals("logprobs") || property.NameEquals("sum_logprob") || (tokens != null && property.NameEquals("tokens"))) continue;
                property.WriteTo(writer);
            }
            if (tokens != null)
            {
                writer.WriteStartArray("tokens");
                foreach (int id in tokens) writer.WriteNumberValue(id);
                writer.WriteEndArray();
            }
            writer.WriteStartArray("logprobs");
            foreach (float lp in logProbs) writer.WriteNumberValue(lp);
            writer.WriteEndArray();
            writer.WriteNumber("sum_logprob", logProbs.Sum(lp => (double)lp));
            writer.WriteEndObject();
        }
        output.WriteLine(Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
    }
}

/// <summary>Bad input for <see cref="ScoreCommand"/>; the message names the line, never its content.</summary>
public sealed class ScoreInputException(long lineNumber, string message) : Exception(message)
{
    public long LineNumber { get; } = lineNumber;
}

using System.CommandLine;
using System.Text;
using MeLlama.Core.IO;
using MeLlama.Core.Logging;
using MeLlama.Inference.ChatTemplates;
using MeLlama.Inference.Generation;
using MeLlama.Training.Loop;
using Serilog;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Cli.Commands;

/// <summary>`mellama generate`: text from a model folder, for one prompt (streamed) or a JSONL batch.</summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var shared = new GenerationCliOptions();
        var prompt = new Option<string?>("--prompt", "-p") { Description = "Prompt text (the user's message; formatted by the chat template)" };
        var input = new Option<string?>("--input", "-i") { Description = "JSONL batch: each record's \"prompt\", \"instruction\"(+\"input\"), \"messages\" or \"conversations\" is answered" };
        var output = new Option<string?>("--output", "-o") { Description = "With --input: write the records with a \"completion\" field here (atomically); default stdout" };
        var benchmark = new Option<bool>("--benchmark") { Description = "Measure generation speed (tokens/s) with and without the KV cache for --prompt" };
        var batchSize = new Option<int>("--batch-size") { Description = "With --input: records generated together in one batch (left-padded; each gets what it would alone, up to float rounding)", DefaultValueFactory = _ => 8 };
        var command = new Command("generate",
            "Generate text with a model folder: KV cache, greedy or temperature/top-k/top-p sampling, repetition penalty, stop at EOS or stop strings. " +
            "With --prompt the text streams to stdout; with --input each JSONL record gets a \"completion\". Exit codes: 0 ok, 1 failure, 2 bad input.")
        {
            prompt, input, output, benchmark, batchSize,
        };
        shared.AddTo(command);
        command.SetAction((parse, cancel) => Task.FromResult(Run(parse, shared, parse.GetValue(prompt), parse.GetValue(input), parse.GetValue(output), parse.GetValue(benchmark), parse.GetValue(batchSize), cancel)));
        return command;
    }

    static int Run(ParseResult parse, GenerationCliOptions shared, string? prompt, string? input, string? output, bool benchmark, int batchSize, CancellationToken cancel)
    {
        using var log = LogSetup.Create(GlobalOptions.LogOptions(parse));
        if ((prompt is null) == (input is null))
        {
            log.Error("give exactly one of --prompt and --input");
            return 2;
        }
        if (output is not null && input is null)
        {
            log.Error("--output goes with --input (a --prompt's text goes to stdout)");
            return 2;
        }
        if (batchSize < 1)
        {
            log.Error("--batch-size must be >= 1 (got {BatchSize})", batchSize);
            return 2;
        }
        if (benchmark && prompt is null)
        {
            log.Error("--benchmark measures a --prompt");
            return 2;
        }
        try
        {
            var options = shared.Options(parse);
            List<BatchGeneration.Item>? items = input is null ? null : BatchGeneration.ReadInput(input);
            using var folder = shared.LoadModel(parse, log);
            var template = folder.ResolveTemplate(parse.GetValue(shared.Template));
            var generator = new TextGenerator(folder.Model, folder.Tokenizer);
            log.Information("Model {Model}: {Params:N0} parameters on {Device}, template {Template}, tokenizer {Tokenizer}",
                parse.GetValue(shared.Model), folder.Model.Config.ParameterCount(), folder.Model.Device.ToString(), template.Id, folder.Tokenizer.Name);

            using var ctrlC = CancelOnCtrlC(cancel, out var token);
            if (items is not null) return RunBatch(items, generator, template, options, output, batchSize, log, token);

            var messages = shared.Messages(parse, prompt!);
            int[] ids = ChatEncoder.EncodePrompt(template, folder.Tokenizer, messages);
            if (benchmark) return Benchmark(generator, ids, options, log);
            var stdout = Console.Out;
            var result = generator.Generate(ids, options, text => { stdout.Write(text); stdout.Flush(); }, token);
            stdout.WriteLine();
            log.Information("{Tokens} tokens in {Seconds:F2} s ({Rate:F1} tokens/s; prompt {Prompt} tokens, prefill {Prefill:F2} s); stopped: {Finish}",
                result.GeneratedIds.Length, result.PrefillSeconds + result.DecodeSeconds, result.TokensPerSecond, ids.Length, result.PrefillSeconds, result.Finish);
            return 0;
        }
        catch (Exception e)
        {
            return CommandFailures.Report(e, log, "generate");
        }
    }

    static int RunBatch(List<BatchGeneration.Item> items, TextGenerator generator, IChatTemplate template, GenerationOptions options, string? output, int batchSize, ILogger log, CancellationToken token)
    {
        var progress = System.Diagnostics.Stopwatch.StartNew();
        void OnRecord(int done, GenerationResult _)
        {
            if (progress.Elapsed.TotalSeconds < 10 && done != items.Count) return;
            log.Information("{Done}/{Total} records", done, items.Count);
            progress.Restart();
        }
        BatchSummary summary;
        if (output is null)
        {
            summary = BatchGeneration.Run(items, generator, template, options, Console.Out, OnRecord, token, batchSize);
        }
        else
        {
            summary = null!;
            AtomicFile.Write(output, stream =>
            {
                using var writer = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true);
                summary = BatchGeneration.Run(items, generator, template, options, writer, OnRecord, token, batchSize);
                if (summary.Records < items.Count) throw new OperationCanceledException($"interrupted after {summary.Records} of {items.Count} records; {output} was not written");
            });
        }
        log.Information("{Records} records, {Tokens:N0} tokens in {Seconds:F1} s ({Rate:F1} tokens/s); finished by {Finishes}",
            summary.Records, summary.GeneratedTokens, summary.Seconds, summary.TokensPerSecond, string.Join(", ", summary.Finishes.Select(f => $"{f.Key} {f.Value}")));
        return summary.Records == items.Count ? 0 : 1;
    }

    /// <summary>
    /// Same prompt and continuation (the given sampling options, greedy by default) with and without the KV cache after a
    /// warm-up, plus one sampled run with the cache; a table on stdout.
    /// </summary>
    static int Benchmark(TextGenerator generator, int[] ids, GenerationOptions options, ILogger log)
    {
        options = options with { StopAtEos = false, StopStrings = [] };
        generator.Generate(ids, options with { MaxNewTokens = Math.Min(8, options.MaxNewTokens) });
        Console.WriteLine($"prompt {ids.Length} tokens, {options.MaxNewTokens} new tokens, threads {get_num_threads()}, device {generator.Model.Device}");
        Console.WriteLine("kv_cache  tokens  seconds  tokens/s  prefill_s");
        GenerationResult? cached = null, full = null;
        foreach (bool useCache in new[] { true, false })
        {
            var result = generator.Generate(ids, options with { UseKvCache = useCache });
            Console.WriteLine($"{(useCache ? "on " : "off"),-9} {result.GeneratedIds.Length,6}  {result.PrefillSeconds + result.DecodeSeconds,7:F2}  {result.TokensPerSecond,8:F1}  {result.PrefillSeconds,9:F3}");
            if (useCache) cached = result; else full = result;
        }
        // Sampling costs a sort of the vocabulary per step on the CPU: show it next to greedy.
        var sampled = generator.Generate(ids, options with { Temperature = 0.8, TopK = 0, TopP = 0.95, Seed = 1 });
        Console.WriteLine($"{"on*",-9} {sampled.GeneratedIds.Length,6}  {sampled.PrefillSeconds + sampled.DecodeSeconds,7:F2}  {sampled.TokensPerSecond,8:F1}  {sampled.PrefillSeconds,9:F3}   (* sampling: temperature 0.8, top-p 0.95)");
        bool same = cached!.GeneratedIds.SequenceEqual(full!.GeneratedIds);
        Console.WriteLine($"speed-up {cached.TokensPerSecond / full.TokensPerSecond:F1}x; same tokens: {same}");
        if (!same && options.Greedy) log.Warning("greedy tokens differ with and without the KV cache");
        return 0;
    }

    /// <summary>First Ctrl-C stops the current generation (what was generated is kept); a second one ends the process.</summary>
    internal static IDisposable CancelOnCtrlC(CancellationToken outer, out CancellationToken token)
    {
        var source = CancellationTokenSource.CreateLinkedTokenSource(outer);
        token = source.Token;
        ConsoleCancelEventHandler handler = (_, e) =>
        {
            if (source.IsCancellationRequested) return;
            e.Cancel = true;
            source.Cancel();
        };
        Console.CancelKeyPress += handler;
        return new Unsubscribe(() => { Console.CancelKeyPress -= handler; source.Dispose(); });
    }

    sealed class Unsubscribe(Action action) : IDisposable
    {
        public void Dispose() => action();
    }
}

/// <summary>Options generate and chat share: model, template, sampling, device.</summary>
sealed class GenerationCliOptions
{
    public readonly Option<string> Model = new("--model", "-m") { Description = "HF model folder (e.g. written by `mellama export`)", Required = true };
    public readonly Option<string> Template = new("--template", "-t")
    {
        Description = $"Chat template: auto (the one recorded in the model folder, else none), {string.Join(", ", ChatTemplateRegistry.BuiltInNames)}, or a JSON file with a custom template",
        DefaultValueFactory = _ => "auto",
    };
    public readonly Option<string?> System = new("--system") { Description = "System message (placed as the template places it)" };
    public readonly Option<string?> Tokenizer = new("--tokenizer") { Description = "Tokenizer override (gpt2, a tokenizer.model, an HF folder); default: the model folder's" };
    public readonly Option<int> MaxNewTokens = new("--max-new-tokens", "-n") { Description = "Most tokens to generate", DefaultValueFactory = _ => 256 };
    public readonly Option<double> Temperature = new("--temperature") { Description = "0 = greedy (default); > 0 samples", DefaultValueFactory = _ => 0.0 };
    public readonly Option<int> TopK = new("--top-k") { Description = "Sample among the K most likely tokens (0 = all)", DefaultValueFactory = _ => 0 };
    public readonly Option<double> TopP = new("--top-p") { Description = "Nucleus sampling mass (1 = off)", DefaultValueFactory = _ => 1.0 };
    public readonly Option<double> RepetitionPenalty = new("--repetition-penalty") { Description = "Penalty on tokens already present (1 = off; 1.1-1.3 typical)", DefaultValueFactory = _ => 1.0 };
    public readonly Option<ulong> Seed = new("--seed") { Description = "Sampling seed", DefaultValueFactory = _ => 0UL };
    public readonly Option<string[]> Stop = new("--stop") { Description = "Stop when this text appears (repeatable; the text is cut before it)" };
    public readonly Option<bool> IgnoreEos = new("--ignore-eos") { Description = "Keep generating past the EOS token" };
    public readonly Option<bool> NoKvCache = new("--no-kv-cache") { Description = "Recompute the whole sequence every step (slow; for comparison)" };
    public readonly Option<string> Device = new("--device") { Description = "auto (cuda when available), cpu, cuda, cuda:N", DefaultValueFactory = _ => "auto" };
    public readonly Option<string> Dtype = new("--dtype") { Description = "auto (bf16 on cuda, fp32 on cpu), fp32, bf16", DefaultValueFactory = _ => "auto" };
    public readonly Option<int> Threads = new("--threads") { Description = "CPU threads for torch (0 = all cores)", DefaultValueFactory = _ => 0 };

    public void AddTo(Command command)
    {
        foreach (Option option in new Option[] { Model, Template, System, Tokenizer, MaxNewTokens, Temperature, TopK, TopP, RepetitionPenalty, Seed, Stop, IgnoreEos, NoKvCache, Device, Dtype, Threads })
            command.Options.Add(option);
    }

    public GenerationOptions Options(ParseResult parse) => new GenerationOptions
    {
        MaxNewTokens = parse.GetValue(MaxNewTokens),
        Temperature = parse.GetValue(Temperature),
        TopK = parse.GetValue(TopK),
        TopP = parse.GetValue(TopP),
        RepetitionPenalty = parse.GetValue(RepetitionPenalty),
        Seed = parse.GetValue(Seed),
        StopStrings = parse.GetValue(Stop) ?? [],
        StopAtEos = !parse.GetValue(IgnoreEos),
        UseKvCache = !parse.GetValue(NoKvCache),
    }.Validate();

    public IReadOnlyList<ChatMessage> Messages(ParseResult parse, string user)
    {
        var messages = new List<ChatMessage>();
        if (parse.GetValue(System) is { Length: > 0 } system) messages.Add(ChatMessage.System(system));
        messages.Add(ChatMessage.User(user));
        return messages;
    }

    public ModelFolder LoadModel(ParseResult parse, ILogger log)
    {
        int threads = parse.GetValue(Threads);
        if (threads < 0) throw new ArgumentException("--threads must be >= 0");
        if (threads > 0) set_num_threads(threads);
        var device = ModelFactory.ResolveDevice(parse.GetValue(Device)!);
        var dtype = parse.GetValue(Dtype) switch
        {
            "auto" => device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32,
            "fp32" or "float32" => ScalarType.Float32,
            "bf16" or "bfloat16" => ScalarType.BFloat16,
            var other => throw new ArgumentException($"--dtype must be auto, fp32 or bf16, not '{other}'"),
        };
        var timer = global::System.Diagnostics.Stopwatch.StartNew();
        var folder = ModelFolder.Load(parse.GetValue(Model)!, device, dtype, parse.GetValue(Tokenizer));
        log.Debug("Loaded {Model} in {Seconds:F1} s ({Dtype})", parse.GetValue(Model), timer.Elapsed.TotalSeconds, dtype);
        return folder;
    }
}

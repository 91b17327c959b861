using System.CommandLine;
using System.Globalization;
using MeLlama.Core.Logging;
using MeLlama.Evaluation.Datasets;
using MeLlama.Evaluation.Harness;
using MeLlama.Evaluation.Models;
using MeLlama.Evaluation.Prompting;
using MeLlama.Evaluation.Tasks;
using static TorchSharp.torch;

namespace MeLlama.Cli.Commands;

/// <summary>
/// <c>mellama eval --model HF_DIR --tasks pubmedqa,medqa,medmcqa [--mode loglik|generate] [--shots K] [--limit N] [--out DIR]</c>:
/// Me-LLaMA's medical benchmarks (and held-out perplexity) with a resumable prediction cache; writes
/// OUT/results.json and OUT/results.md (our numbers beside the paper's).
/// </summary>
public static class EvalCommand
{
    static readonly Option<string> ModelOption = new("--model", "-m") { Description = "HF model folder (config.json + safetensors); required unless --list-tasks" };
    static readonly Option<string> TasksOption = new("--tasks") { Description = "Comma-separated task names or task JSON files", DefaultValueFactory = _ => "pubmedqa,medqa,medmcqa" };
    static readonly Option<string> ModeOption = new("--mode") { Description = "loglik (score each choice) or generate (greedy + answer parsing)", DefaultValueFactory = _ => "loglik" };
    static readonly Option<int> ShotsOption = new("--shots") { Description = "Few-shot examples per item (drawn deterministically by --seed)", DefaultValueFactory = _ => 0 };
    static readonly Option<int?> LimitOption = new("--limit") { Description = "Only the first N items of each task" };
    static readonly Option<string> OutOption = new("--out", "-o") { Description = "Output folder (results, prediction cache)", DefaultValueFactory = _ => "eval-out" };
    static readonly Option<string?> DataRootOption = new("--data-root") { Description = "Folder the tasks' data paths are relative to (default: $MELLAMA_EVAL_DATA, else the current folder)" };
    static readonly Option<string?> TaskDirOption = new("--task-dir") { Description = "Extra folder of task definitions (NAME.json), searched before the built-in ones" };
    static readonly Option<string?> TokenizerOption = new("--tokenizer") { Description = "Tokenizer when the model folder has none: gpt2, a tokenizer.model, or an HF folder" };
    static readonly Option<ulong> SeedOption = new("--seed") { Description = "Seed for few-shot draws and bootstrap", DefaultValueFactory = _ => 1234UL };
    static readonly Option<int> BatchOption = new("--batch-size") { Description = "Items per model call and per cache append", DefaultValueFactory = _ => 8 };
    static readonly Option<int> MaxBatchTokensOption = new("--max-batch-tokens") { Description = "Padded tokens per forward pass", DefaultValueFactory = _ => 8192 };
    static readonly Option<int> BootstrapOption = new("--bootstrap") { Description = "Bootstrap resamples for confidence intervals (0 = none)", DefaultValueFactory = _ => 1000 };
    static readonly Option<string?> FormatOption = new("--prompt-format") { Description = "plain or mellama (\"Human: \\n{prompt}\\n\\nAssistant: \\n\"); default plain for loglik, mellama for generate" };
    static readonly Option<string> DeviceOption = new("--device") { Description = "cpu or cuda[:N]", DefaultValueFactory = _ => "cpu" };
    static readonly Option<string> DtypeOption = new("--dtype") { Description = "float32, bfloat16 or float16", DefaultValueFactory = _ => "float32" };
    static readonly Option<string?> PaperSizeOption = new("--paper-size") { Description = "Paper columns to show: 13B, 70B or all (default: by parameter count)" };
    static readonly Option<string[]> PplOption = new("--ppl") { Description = "Held-out perplexity on a prepared dataset: DOMAIN=FOLDER (repeatable)", AllowMultipleArgumentsPerToken = false };
    static readonly Option<int> PplSeqLenOption = new("--ppl-seq-len") { Description = "Tokens predicted per perplexity window", DefaultValueFactory = _ => 1024 };
    static readonly Option<long?> PplMaxWindowsOption = new("--ppl-max-windows") { Description = "Cap on windows per domain" };
    static readonly Option<bool> ListOption = new("--list-tasks") { Description = "List the known tasks and exit" };

    public static Command Create()
    {
        var command = new Command("eval", "Evaluate a model on Me-LLaMA's medical benchmarks (resumable); writes results.json and results.md");
        foreach (var o in new Option[] { ModelOption, TasksOption, ModeOption, ShotsOption, LimitOption, OutOption, DataRootOption, TaskDirOption, TokenizerOption,
                     SeedOption, BatchOption, MaxBatchTokensOption, BootstrapOption, FormatOption, DeviceOption, DtypeOption, PaperSizeOption, PplOption,
                     PplSeqLenOption, PplMaxWindowsOption, ListOption })
            command.Options.Add(o);
        command.SetAction((parse, cancellation) => Task.FromResult(Execute(parse, cancellation)));
        return command;
    }

    static int Execute(ParseResult parse, CancellationToken cancellation)
    {
        var stderr = parse.InvocationConfiguration.Error;
        var stdout = parse.InvocationConfiguration.Output;
        if (parse.GetValue(ListOption))
        {
            var catalog = new TaskCatalog(parse.GetValue(TaskDirOption));
            foreach (var name in catalog.Names)
            {
                var t = catalog.Get(name);
                stdout.WriteLine($"{name,-10} {t.Family,-15} {t.AnswerKind,-10} {(t.Dataset.Credentialed ? "credentialed " : "")}{t.Title}");
            }
            return 0;
        }

        using var log = LogSetup.Create(GlobalOptions.LogOptions(parse));
        EvalSessionOptions options;
        string? modelDir = parse.GetValue(ModelOption);
        Device device;
        ScalarType dtype;
        try
        {
            var mode = parse.GetValue(ModeOption)!.ToLowerInvariant() switch
            {
                "loglik" or "loglikelihood" => EvalMode.LogLikelihood,
                "generate" or "gen" => EvalMode.Generate,
                var m => throw new ArgumentException($"--mode must be loglik or generate (got '{m}')"),
            };
            int shots = parse.GetValue(ShotsOption);
            if (shots < 0) throw new ArgumentException("--shots must be ≥ 0");
            if (parse.GetValue(LimitOption) is < 1) throw new ArgumentException("--limit must be ≥ 1");
            if (parse.GetValue(BatchOption) < 1) throw new ArgumentException("--batch-size must be ≥ 1");
            if (modelDir == null) throw new ArgumentException("--model is required");
            if (!Directory.Exists(modelDir)) throw new ArgumentException($"Model folder '{modelDir}' does not exist");
            var tasks = parse.GetValue(TasksOption)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (tasks.Length == 0) throw new ArgumentException("--tasks is empty");
            var format = parse.GetValue(FormatOption) is string f ? PromptFormats.Parse(f) : (PromptFormat?)null;
            var ppl = (parse.GetValue(PplOption) ?? []).Select(spec =>
            {
                int eq = spec.IndexOf('=', StringComparison.Ordinal);
                if (eq <= 0 || eq == spec.Length - 1) throw new ArgumentException($"--ppl expects DOMAIN=FOLDER (got '{spec}')");
                return (spec[..eq], spec[(eq + 1)..]);
            }).ToList();
            device = new Device(parse.GetValue(DeviceOption)!);
            dtype = parse.GetValue(DtypeOption)!.ToLowerInvariant() switch
            {
                "float32" or "fp32" => ScalarType.Float32,
                "bfloat16" or "bf16" => ScalarType.BFloat16,
                "float16" or "fp16" => ScalarType.Float16,
                var d => throw new ArgumentException($"--dtype must be float32, bfloat16 or float16 (got '{d}')"),
            };
            options = new EvalSessionOptions
            {
                Tasks = tasks,
                OutDir = Path.GetFullPath(parse.GetValue(OutOption)!),
                DataRoot = Path.GetFullPath(parse.GetValue(DataRootOption) ?? Environment.GetEnvironmentVariable("MELLAMA_EVAL_DATA") ?? "."),
                TaskDirectory = parse.GetValue(TaskDirOption),
                PaperSize = parse.GetValue(PaperSizeOption),
                PerplexityData = ppl,
                PerplexitySeqLen = parse.GetValue(PplSeqLenOption),
                PerplexityMaxWindows = parse.GetValue(PplMaxWindowsOption),
                Settings = new EvalSettings
                {
                    Mode = mode, Shots = shots, Limit = parse.GetValue(LimitOption), Seed = parse.GetValue(SeedOption),
                    BatchSize = parse.GetValue(BatchOption), BootstrapResamples = parse.GetValue(BootstrapOption), Format = format,
                },
            };
            // Resolve tasks and read their data before loading the model, so bad input fails fast.
            var catalog = new TaskCatalog(options.TaskDirectory);
            foreach (var t in tasks) TaskDataLoader.Load(catalog.Get(t), options.DataRoot);
        }
        catch (Exception e)
        {
            return CommandFailures.Report(e, stderr, "eval", log: log);
        }

        try
        {
            Directory.CreateDirectory(options.OutDir);
            using var model = HfEvalModel.Load(modelDir!, parse.GetValue(TokenizerOption), device, dtype, options.Settings.BatchSize,
                parse.GetValue(MaxBatchTokensOption), Path.Combine(options.OutDir, ".model-fingerprint"));
            log.Information("Model {Path}: {Params:N0} parameters, {Fingerprint}; tokenizer {Tokenizer}", model.Model.Info.Path, model.Model.Info.ParameterCount, model.Model.Info.Fingerprint, model.Model.Info.Tokenizer);
            var report = EvalSession.Run(options, model.Model, log, cancellation);
            foreach (var task in report.Tasks)
                stdout.WriteLine(string.Join("  ", new[] { task.Task }.Concat(task.Metrics.Select(m => string.Create(CultureInfo.InvariantCulture, $"{m.Name}={m.Value:0.0000}")))));
            foreach (var d in report.Perplexity)
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ppl[{d.Domain}]={d.Perplexity:0.000}"));
            log.Information("Wrote {Json} and {Markdown}", Path.Combine(options.OutDir, Evaluation.Reporting.ResultsWriter.JsonFile), Path.Combine(options.OutDir, Evaluation.Reporting.ResultsWriter.MarkdownFile));
            return 0;
        }
        catch (Exception e)
        {
            if (e is OperationCanceledException) stderr.WriteLine("mellama eval: finished items are in the prediction cache");
            return CommandFailures.Report(e, stderr, "eval", readingInput: false, log: log);
        }
    }
}

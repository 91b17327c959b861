using MeLlama.Core.IO;
using MeLlama.Evaluation.Datasets;
using MeLlama.Evaluation.Models;
using MeLlama.Evaluation.Perplexity;
using MeLlama.Evaluation.Reporting;
using MeLlama.Evaluation.Tasks;
using Serilog;

namespace MeLlama.Evaluation.Harness;

/// <summary>What `mellama eval` was asked to do.</summary>
public sealed record EvalSessionOptions
{
    public required IReadOnlyList<string> Tasks { get; init; }
    public required string OutDir { get; init; }
    public required string DataRoot { get; init; }
    public EvalSettings Settings { get; init; } = new();
    public string? TaskDirectory { get; init; }
    /// <summary>"13B", "70B" or "all"; null = by the model's parameter count.</summary>
    public string? PaperSize { get; init; }
    /// <summary>Held-out perplexity: (domain, prepared dataset folder).</summary>
    public IReadOnlyList<(string Domain, string Path)> PerplexityData { get; init; } = [];
    public int PerplexitySeqLen { get; init; } = 1024;
    public long? PerplexityMaxWindows { get; init; }
}

/// <summary>The model side of a session: how to score and generate, and what to call it in the report.</summary>
/// <param name="TokenizerFingerprint">sha256 of the model's tokenizer, checked against prepared datasets' manifests (null: no check).</param>
public sealed record EvalModel(ModelInfo Info, ILogLikelihoodScorer? Scorer, ITextGenerator? Generator, ICausalLanguageModel? TokenModel, string? TokenizerFingerprint = null);

/// <summary>
/// A whole evaluation: resolve tasks and data (failing before any model work if a file is missing), run
/// every task through the shared prediction cache in OUT/predictions.jsonl, compute held-out perplexity, and
/// write OUT/results.json + OUT/results.md. Re-running the same command continues where it stopped.
/// </summary>
public static class EvalSession
{
    public const string CacheFile = "predictions.jsonl";

    public static EvalReport Run(EvalSessionOptions options, EvalModel model, ILogger logger, CancellationToken cancellation = default)
    {
        var catalog = new TaskCatalog(options.TaskDirectory);
        var tasks = options.Tasks.Select(catalog.Get).ToList();
        // Load every dataset first: a missing or malformed file is reported before hours of model time.
        var data = tasks.Select(t => TaskDataLoader.Load(t, options.DataRoot)).ToList();
        for (int i = 0; i < tasks.Count; i++)
            logger.Information("Task {Task}: {Items} items, few-shot pool {Pool}", tasks[i].Name, data[i].Items.Count, data[i].FewShotPool.Count);

        bool restricted = tasks.Any(t => t.Dataset.Credentialed);
        RestrictedPaths.CreateDirectory(options.OutDir, restricted);
        var fileMode = RestrictedPaths.FileMode(restricted);
        var runner = new EvalRunner(model.Scorer, model.Generator, logger);
        var results = new List<TaskResult>();
        using (var cache = new PredictionCache(Path.Combine(options.OutDir, CacheFile), restricted))
        {
            if (cache.LoadedCount > 0 || cache.DroppedTornLines > 0)
                logger.Information("Prediction cache {Path}: {Count} records{Torn}", cache.Path, cache.LoadedCount, cache.DroppedTornLines > 0 ? " (cut one interrupted line)" : "");
            for (int i = 0; i < tasks.Count; i++)
                results.Add(runner.Run(tasks[i], data[i], options.Settings, cache, cancellation));
        }

        var perplexity = new List<DomainPerplexity>();
        foreach (var (domain, path) in options.PerplexityData)
        {
            if (model.TokenModel == null) throw new InvalidOperationException("Perplexity needs a token-level model");
            var manifest = Data.Datasets.DatasetManifest.Load(path);
            if (model.TokenizerFingerprint != null && manifest.Tokenizer.Fingerprint != model.TokenizerFingerprint)
                throw new InvalidDataException($"{path} was tokenized with {manifest.Tokenizer.Name} ({manifest.Tokenizer.Fingerprint}), but the model's tokenizer is {model.TokenizerFingerprint}: its perplexity would be meaningless");
            using var source = HeldOutWindowSource.Open(path, options.PerplexitySeqLen, domain);
            var result = PerplexityEvaluator.Evaluate(model.TokenModel, source, options.PerplexityMaxWindows, Math.Max(1, options.Settings.BatchSize / 2),
                options.Settings.BootstrapResamples, options.Settings.Seed);
            logger.Information("Perplexity {Domain}: {Ppl:F3} over {Tokens} tokens ({Windows} windows)", domain, result.Perplexity, result.Tokens, result.Windows);
            perplexity.Add(result);
        }

        var paper = PaperResults.LoadBuiltIn();
        var notes = new List<string>();
        if (options.Settings.Mode == EvalMode.LogLikelihood)
            notes.Add("Log-likelihood scores rank the answer choices; the paper generated free text and parsed it (base models often produced no parsable answer, hence its near-zero base-model QA numbers), so the columns measure different things.");
        if (results.Any(r => r.Shots > 0 && r.FewShotSource?.StartsWith("the evaluation split", StringComparison.Ordinal) == true))
            notes.Add("Few-shot examples for tasks without a train/dev file come from the evaluation split itself (never the item being asked).");
        var report = new EvalReport
        {
            Created = DateTimeOffset.UtcNow,
            Model = model.Info,
            Mode = EvalSettings.ModeName(options.Settings.Mode),
            Shots = options.Settings.Shots,
            Seed = options.Settings.Seed,
            Limit = options.Settings.Limit,
            BootstrapResamples = options.Settings.BootstrapResamples,
            ConfidenceLevel = options.Settings.ConfidenceLevel,
            Tasks = results,
            Perplexity = perplexity,
            PaperColumns = paper.ColumnsFor(model.Info.ParameterCount, options.PaperSize),
            PaperSource = paper.Url,
            Notes = notes,
        };
        ResultsWriter.Write(options.OutDir, report, paper, fileMode);
        return report;
    }
}

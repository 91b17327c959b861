using MeLlama.Evaluation.Models;
using MeLlama.Evaluation.Prompting;
using MeLlama.Evaluation.Tasks;
using Serilog;

namespace MeLlama.Evaluation.Harness;

/// <summary>
/// Runs one task end to end: build prompts, skip items already in the prediction cache, ask the model
/// for the rest in batches (appending each batch to the cache as it completes), then score everything.
/// Choice tasks honour the requested mode; other tasks always generate (they have no choices to score),
/// which needs a generator. Logs counts and ids only, never item text.
/// </summary>
public sealed class EvalRunner(ILogLikelihoodScorer? scorer, ITextGenerator? generator, ILogger logger)
{
    /// <summary>The mode a task actually runs in under the requested one.</summary>
    public static EvalMode EffectiveMode(TaskDefinition task, EvalMode requested) =>
        task.AnswerKind == AnswerKind.Choice ? requested : EvalMode.Generate;

    public TaskResult Run(TaskDefinition task, TaskData data, EvalSettings settings, PredictionCache cache, CancellationToken cancellation = default)
    {
        var mode = EffectiveMode(task, settings.Mode);
        var format = settings.EffectiveFormat(mode);
        string modelFingerprint = mode == EvalMode.LogLikelihood
            ? (scorer ?? throw new InvalidOperationException("Log-likelihood mode needs a scorer")).Fingerprint
            : (generator ?? throw new InvalidOperationException($"Task '{task.Name}' needs generation, but no generator is available")).Fingerprint;
        string run = RunFingerprint.Compute(modelFingerprint, task, mode, settings.Shots, settings.Seed, format);

        var items = settings.Limit is int limit ? data.Items.Take(limit).ToList() : data.Items.ToList();
        var builder = new PromptBuilder(task, format, settings.Shots, new FewShotSampler(data.FewShotPool, settings.Seed, task.Name));
        var predictions = new PredictionRecord?[items.Count];
        var pending = new List<int>();
        for (int i = 0; i < items.Count; i++)
        {
            if (cache.TryGet(PredictionCache.KeyOf(task.Name, items[i].Id, run), out var cached)) predictions[i] = cached;
            else pending.Add(i);
        }
        int fromCache = items.Count - pending.Count;
        logger.Information("Task {Task}: {Items} items ({Cached} cached, {Pending} to run), mode {Mode}, {Shots}-shot, format {Format}, run {Run}",
            task.Name, items.Count, fromCache, pending.Count, EvalSettings.ModeName(mode), settings.Shots, format, run);

        var started = System.Diagnostics.Stopwatch.StartNew();
        for (int start = 0; start < pending.Count; start += settings.BatchSize)
        {
            cancellation.ThrowIfCancellationRequested();
            var batch = pending.Skip(start).Take(settings.BatchSize).ToList();
            var records = mode == EvalMode.LogLikelihood
                ? ScoreChoices(task, batch.Select(i => items[i]).ToList(), builder, run)
                : Generate(task, batch.Select(i => items[i]).ToList(), builder, run);
            cache.Append(records);
            for (int b = 0; b < batch.Count; b++) predictions[batch[b]] = records[b];
            int done = Math.Min(start + settings.BatchSize, pending.Count);
            logger.Information("Task {Task}: {Done}/{Pending} items, {Rate:F2} items/s", task.Name, done, pending.Count, done / Math.Max(started.Elapsed.TotalSeconds, 1e-9));
        }

        var all = predictions.Select(p => p!).ToList();
        int unparsed = task.AnswerKind == AnswerKind.Choice ? all.Count(p => p.Prediction == null) : 0;
        return new TaskResult
        {
            Task = task.Name, Title = task.Title, Family = task.Family,
            Mode = EvalSettings.ModeName(mode), Shots = settings.Shots, PromptFormat = format.ToString(),
            FewShotSource = settings.Shots > 0 ? data.FewShotSource : null,
            Items = items.Count, Computed = pending.Count, FromCache = fromCache, Unparsed = unparsed,
            RunFingerprint = run,
            Metrics = TaskMetrics.Compute(task, items, all, settings),
            NotImplemented = TaskMetrics.NotImplemented(task),
            PaperMetrics = task.PaperMetrics, PaperKey = task.PaperKey ?? task.Name,
        };
    }

    List<PredictionRecord> ScoreChoices(TaskDefinition task, IReadOnlyList<EvalItem> items, PromptBuilder builder, string run)
    {
        var requests = new List<LogLikelihoodRequest>();
        var perItem = new List<(int Offset, IReadOnlyList<string> Continuations)>();
        foreach (var item in items)
        {
            if (item.Choices.Count == 0) throw new InvalidOperationException($"Task '{task.Name}', item {item.Id}: no choices to score");
            string context = builder.Context(item);
            var continuations = builder.Continuations(item, context);
            perItem.Add((requests.Count, continuations));
            requests.AddRange(continuations.Select(c => new LogLikelihoodRequest(context, c)));
        }
        var scores = scorer!.Score(requests);
        var records = new List<PredictionRecord>(items.Count);
        for (int k = 0; k < items.Count; k++)
        {
            var (offset, continuations) = perItem[k];
            var item = items[k];
            var ll = new double[continuations.Count];
            var chars = new int[continuations.Count];
            var tokens = new int[continuations.Count];
            for (int c = 0; c < continuations.Count; c++)
            {
                ll[c] = scores[offset + c].Sum;
                tokens[c] = scores[offset + c].TokenCount;
                // lm-evaluation-harness's acc_norm divides by the choice's length in characters (ignoring the leading delimiter).
                chars[c] = Math.Max(1, continuations[c].TrimStart().Length);
            }
            int best = ArgMax(ll.Select(v => v).ToArray());
            int bestNorm = ArgMax(ll.Select((v, c) => v / chars[c]).ToArray());
            records.Add(new PredictionRecord
            {
                Key = PredictionCache.KeyOf(task.Name, item.Id, run), Task = task.Name, Item = item.Id, Run = run,
                Mode = EvalSettings.ModeName(EvalMode.LogLikelihood), Gold = item.Gold,
                Prediction = item.ChoiceLabels[best], PredictionNorm = item.ChoiceLabels[bestNorm],
                LogLikelihoods = ll, ContinuationChars = chars, ContinuationTokens = tokens,
            });
        }
        return records;
    }

    List<PredictionRecord> Generate(TaskDefinition task, IReadOnlyList<EvalItem> items, PromptBuilder builder, string run)
    {
        var stops = task.Stop ?? DefaultStops(task.AnswerKind);
        var outputs = generator!.Generate(items.Select(i => new GenerationRequest(builder.Context(i), task.MaxNewTokens, stops)).ToList());
        return items.Select((item, k) => new PredictionRecord
        {
            Key = PredictionCache.KeyOf(task.Name, item.Id, run), Task = task.Name, Item = item.Id, Run = run,
            Mode = EvalSettings.ModeName(EvalMode.Generate), Gold = item.Gold,
            Prediction = task.AnswerKind == AnswerKind.Choice ? AnswerParser.Choice(outputs[k], item.ChoiceLabels, item.Choices) : null,
            Output = outputs[k],
        }).ToList();
    }

    /// <summary>Short answers end at a blank line (few-shot examples are separated by one); every answer ends where a new "Human:" turn would start.</summary>
    public static IReadOnlyList<string> DefaultStops(AnswerKind kind) =>
        kind is AnswerKind.Choice or AnswerKind.Extractive ? [PromptBuilder.ShotSeparator, "Human:"] : ["Human:"];

    static int ArgMax(double[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}

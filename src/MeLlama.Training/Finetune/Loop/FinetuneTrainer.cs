using MeLlama.Model;
using System.Diagnostics;
using System.Text.Json;
using MeLlama.Core.IO;
using MeLlama.Tokenization;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Finetune.Config;
using MeLlama.Training.Finetune.Data;
using MeLlama.Training.Finetune.Engine;
using MeLlama.Training.Loop;
using MeLlama.Training.Metrics;
using MeLlama.Training.Optim;
using MeLlama.Training.Runtime;
using Serilog;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Finetune.Loop;

/// <summary>How one fine-tuning invocation runs.</summary>
public sealed record FinetuneOptions
{
    public ILogger Log { get; init; } = Serilog.Core.Logger.None;
    /// <summary>Continue from the run folder's newest good checkpoint (default).</summary>
    public bool Resume { get; init; } = true;
    public TimeSpan? TimeLimit { get; init; }
    public StopSignals? Signals { get; init; }
    public bool Progress { get; init; }
    /// <summary>Test hook: called after each optimizer step.</summary>
    public Action<long>? AfterStep { get; init; }
}

/// <summary>
/// Instruction tuning with the pretraining machinery: the same checkpoint store (atomic, verified, pruned, newest good
/// one resumed), <see cref="TrainerState"/>, AdamW with fp32 master weights, cosine schedule, metrics.jsonl/TensorBoard,
/// progress line, preemption signals and wall-clock budget (exit 75), non-finite step handling. What differs from
/// pretraining: the data (instruction conversations → masked rows, <see cref="SftDataset"/>), the loss (assistant tokens
/// only, <see cref="SftTrainStep"/>), the model (frozen base + LoRA adapters, or full), and what a checkpoint holds
/// (the trained weights only; the base is reloaded from model.init_from).
/// </summary>
public sealed class FinetuneTrainer(FinetuneConfig config, FinetuneOptions options)
{
    readonly ILogger _log = options.Log;

    public static long TotalSteps(FinetuneConfig c, int rows) =>
        c.MaxSteps ?? Math.Max(1, (long)Math.Ceiling(c.Epochs * rows / ((double)c.MicroBatch * c.GradAccum)));

    public TrainOutcome Run()
    {
        // As in the pretraining Trainer: the weights and optimizer state are checked against the manifest while they
        // load (one read), and a checkpoint that fails there is skipped by starting over without it.
        var rejected = new Dictionary<long, string>();
        while (true)
            if (RunOnce(rejected) is { } outcome) return outcome;
    }

    /// <summary>One attempt of <see cref="Run"/>; null when its checkpoint failed its checksum while loading (added to <paramref name="rejected"/>).</summary>
    TrainOutcome? RunOnce(Dictionary<long, string> rejected)
    {
        var c = config;
        var wall = Stopwatch.StartNew();
        var startUtc = DateTime.UtcNow;
        torch.set_num_threads(c.Threads > 0 ? c.Threads : Environment.ProcessorCount);
        torch.manual_seed(unchecked((long)c.Seed));
        var device = ModelFactory.ResolveDevice(c.Device);
        var dtype = ModelFactory.ComputeDtype(c.Precision);
        Directory.CreateDirectory(c.RunDir);
        var store = new CheckpointStore(c.RunDir, _log);
        store.CleanTemporaries();

        // ---- where to start
        CheckpointCheck? resumeFrom = null;
        TrainerState? state = null;
        if (options.Resume)
        {
            resumeFrom = store.FindLatestGood(out _, OptimizerCheckpoint.FilesVerifiedWhileLoading, rejected);
            if (resumeFrom != null)
            {
                if (!FinetuneCheckpointFiles.IsFinetuneCheckpoint(resumeFrom.Dir))
                    throw new ConfigError($"{c.RunDir} holds pretraining checkpoints, not fine-tuning ones; choose another run_dir");
                state = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(resumeFrom.Dir, CheckpointFiles.TrainerState)), TrainerStateJson.Default.TrainerState)
                    ?? throw new InvalidDataException($"{resumeFrom.Dir}: empty {CheckpointFiles.TrainerState}");
                CheckCompatible(resumeFrom.Dir);
                _log.Information("Resuming from {Checkpoint} (step {Step})", resumeFrom.Dir, state.Step);
            }
        }
        else if (store.List().Count > 0)
            throw new ConfigError($"{c.RunDir} already has checkpoints; resume (default) or choose another run_dir");

        // ---- tokenizer, template, data
        var tokenizer = FinetuneModelBuilder.LoadTokenizer(c);
        var template = FinetuneModelBuilder.LoadTemplate(c);
        var (train, eval) = LoadData(c, tokenizer, template);

        // ---- model and step engine
        string? storedBase = resumeFrom is not null && c.Model.InitFrom is null && c.Method == "lora" ? Path.Combine(resumeFrom.Dir, FinetuneCheckpointFiles.BaseModel) : null;
        using var built = FinetuneModelBuilder.Build(c, tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId, device, dtype, storedBase);
        var model = built.Model;
        var mc = model.Config;
        if (c.SeqLen + 1 > mc.MaxPositionEmbeddings)
            throw new ConfigError($"seq_len + 1 = {c.SeqLen + 1} exceeds the model's max_position_embeddings {mc.MaxPositionEmbeddings}");
        using var engine = new SftTrainStep(model, new TrainStepOptions(c.Optimizer.Beta1, c.Optimizer.Beta2, c.Optimizer.Eps,
            c.Optimizer.WeightDecay, c.Optimizer.GradClip, ActivationCheckpointing: false));
        if (resumeFrom != null && state != null)
        {
            try { engine.LoadState(resumeFrom.Dir, state.OptimizerSteps); }
            catch (CheckpointCorruptException e)
            {
                _log.Warning("Checkpoint {Checkpoint} is not usable: {Problem}; starting over from an older one", Path.GetFileName(resumeFrom.Dir), e.Problem);
                rejected[resumeFrom.Step] = e.Problem;
                return null;
            }
            RngCheckpoint.Restore(resumeFrom.Dir);
        }
        long trainable = model.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        long totalSteps = TotalSteps(c, train.Rows.Count);
        long rowsPerStep = (long)c.MicroBatch * c.GradAccum;
        var schedule = CosineSchedule.Create(c.Optimizer.Lr, c.Schedule.MinLr, c.Schedule.MinLrRatio, c.Schedule.WarmupRatio, totalSteps);
        _log.Information("Fine-tuning ({Method}{Lora}) a {Params:N0}-parameter model on {Device}, {Precision}: {Trainable:N0} trainable parameters; " +
                         "template {Template}; {Rows} rows × {Epochs:F2} epochs = {Steps} steps of {RowsPerStep} rows × {SampleTokens} tokens",
            c.Method, c.Method == "lora" ? $" r={c.Lora.Rank} alpha={c.Lora.Alpha} on {string.Join("/", c.Lora.TargetModules)}" : "",
            mc.ParameterCount(), device.ToString(), c.Precision, trainable, template.Id, train.Rows.Count,
            totalSteps * rowsPerStep / (double)train.Rows.Count, totalSteps, rowsPerStep, c.SeqLen + 1);

        using var source = new SftSampleStream(train, c.Seed, state?.Sampler);
        long step = state?.Step ?? 0, tokens = state?.Tokens ?? 0, skippedTotal = state?.SkippedSteps ?? 0;
        int consecutiveBad = state?.ConsecutiveBadSteps ?? 0;
        double elapsedBefore = state?.ElapsedSeconds ?? 0;
        double Elapsed() => elapsedBefore + wall.Elapsed.TotalSeconds;

        using var metrics = new MetricsLog(Path.Combine(c.RunDir, "metrics.jsonl"), step);
        using var tensorboard = c.Tensorboard ? new TensorBoardLog(Path.Combine(c.RunDir, "tensorboard")) : null;
        var progress = new ProgressLine(options.Progress);
        var firstEval = new Dictionary<string, double>();
        var lastEval = new Dictionary<string, double>();
        string? lastCheckpoint = resumeFrom?.Dir;
        long lastSavedStep = resumeFrom != null ? step : -1;
        var saveTime = TimeSpan.Zero;
        var budget = options.TimeLimit is { } limit ? new TimeBudget(limit, startUtc) : null;
        string resolvedConfig = FinetuneConfigLoader.ToJson(c);
        AtomicFile.WriteAllText(Path.Combine(c.RunDir, FinetuneCheckpointFiles.Config), resolvedConfig);

        void Record(MetricRecord r)
        {
            metrics.Write(r);
            tensorboard?.Write(r);
        }

        void Evaluate()
        {
            if (eval is null || eval.Rows.Count == 0 || c.Eval.Batches == 0) return;
            progress.Break();
            var sums = new EvalSums();
            int width = eval.SampleTokens;
            for (int start = 0, batches = 0; start < eval.Rows.Count && batches < c.Eval.Batches; start += c.MicroBatch, batches++)
            {
                int n = Math.Min(c.MicroBatch, eval.Rows.Count - start);
                var buffer = new long[n * width];
                for (int i = 0; i < n; i++) eval.Rows[start + i].CopyTo(buffer, i * width);
                using var t = torch.tensor(buffer, [n, width]);
                sums += engine.Evaluate(t);
            }
            if (sums.Tokens == 0) return;
            double loss = sums.MeanLoss;
            lastEval["instructions"] = loss;
            firstEval.TryAdd("instructions", loss);
            Record(new MetricRecord { Kind = "eval", Step = step, Tokens = tokens, Domain = "instructions", Loss = loss, Perplexity = Math.Exp(loss),
                ElapsedSeconds = Elapsed(), Time = DateTimeOffset.UtcNow });
            _log.Information("Eval step {Step}: assistant-token loss {Loss:F4} (ppl {Ppl:F2}, {Tokens:N0} tokens)", step, loss, Math.Exp(loss), sums.Tokens);
        }

        string Save(string reason)
        {
            progress.Break();
            var sw = Stopwatch.StartNew();
            var trainerState = new TrainerState
            {
                Step = step, Tokens = tokens, OptimizerSteps = engine.OptimizerSteps, SkippedSteps = skippedTotal,
                ConsecutiveBadSteps = consecutiveBad, TotalSteps = totalSteps, Sampler = source.State.DeepClone(), ElapsedSeconds = Elapsed(),
                Precision = c.Precision, Reason = reason,
                Schedule = new ScheduleState { PeakLr = schedule.PeakLr, MinLr = schedule.MinLr, WarmupSteps = schedule.WarmupSteps, TotalSteps = schedule.TotalSteps },
            };
            string dir = store.Save(step, tmp =>
            {
                engine.SaveState(tmp);
                if (c.Model.InitFrom is null && c.Method == "lora")
                    SafeTensorsWriter.Write(Path.Combine(tmp, FinetuneCheckpointFiles.BaseModel), built.Lora!.BaseParameters(), new Dictionary<string, string> { ["format"] = "pt" });
                RngCheckpoint.Save(tmp);
                File.WriteAllText(Path.Combine(tmp, CheckpointFiles.TrainerState), JsonSerializer.Serialize(trainerState, TrainerStateJson.Default.TrainerState));
                File.WriteAllText(Path.Combine(tmp, FinetuneCheckpointFiles.Config), resolvedConfig);
                File.WriteAllText(Path.Combine(tmp, CheckpointFiles.ModelConfig), mc.ToHfJson("float32"));
            });
            store.Prune(c.Checkpoint.KeepLast);
            saveTime = sw.Elapsed;
            lastCheckpoint = dir;
            lastSavedStep = step;
            _log.Information("Saved checkpoint {Checkpoint} ({Reason}, {Seconds:F1} s)", dir, reason, sw.Elapsed.TotalSeconds);
            return dir;
        }

        TrainOutcome Finish(TrainEnd end, string reason, string message)
        {
            if (lastSavedStep != step) Save(reason);
            progress.Break();
            return new TrainOutcome(end, step, tokens, lastCheckpoint, firstEval, lastEval, message);
        }

        if (step == 0) Evaluate();
        var microBatches = new Tensor[c.GradAccum];
        var buffer = new long[c.MicroBatch * (c.SeqLen + 1)];
        var stepTimer = new Stopwatch();
        var recentStep = TimeSpan.Zero;
        var logTimer = Stopwatch.StartNew();
        while (step < totalSteps)
        {
            if (options.Signals?.Reason is { } signal)
            {
                _log.Warning("Received {Signal}: saving at step {Step} and exiting with code {Code} so the job can be requeued", signal, step, ExitCodes.Preempted);
                return Finish(TrainEnd.Preempted, "preempted-" + signal.ToLowerInvariant(), $"stopped by {signal} at step {step}");
            }
            if (budget != null && recentStep > TimeSpan.Zero && budget.ShouldStop(DateTime.UtcNow, recentStep, saveTime))
            {
                _log.Warning("Wall-clock budget {Limit} nearly spent: saving at step {Step} and exiting with code {Code}", budget.Limit, step, ExitCodes.Preempted);
                return Finish(TrainEnd.TimeLimit, "time-limit", $"time limit reached at step {step}");
            }

            stepTimer.Restart();
            double lr = schedule.LrAt(step);
            built.Lora?.ReseedDropout(c.Seed, step);
            StepResult result;
            using (var scope = NewDisposeScope())
            {
                for (int i = 0; i < c.GradAccum; i++)
                {
                    source.NextBatch(c.MicroBatch, buffer);
                    microBatches[i] = torch.tensor(buffer, [c.MicroBatch, c.SeqLen + 1]);
                }
                result = engine.Step(microBatches, lr);
            }
            Throughput.Sync(device);
            step++;
            tokens += result.Tokens;
            recentStep = stepTimer.Elapsed;

            if (result.Skipped)
            {
                skippedTotal++;
                consecutiveBad++;
                progress.Break();
                _log.Warning("Step {Step}: non-finite loss or gradient (loss {Loss}, grad norm {Norm}); update skipped ({Consecutive} in a row)",
                    step, result.Loss, result.GradNorm, consecutiveBad);
                if (consecutiveBad >= c.MaxBadSteps)
                {
                    string message = $"{consecutiveBad} consecutive steps had a non-finite loss or gradient; the trained weights are those of the last good step. Lower optimizer.lr or check the data.";
                    _log.Error("Stopping: {Message}", message);
                    return Finish(TrainEnd.Diverged, "diverged", message);
                }
            }
            else consecutiveBad = 0;

            double processed = rowsPerStep * (c.SeqLen + 1) / Math.Max(recentStep.TotalSeconds, 1e-9);
            if (step % c.LogInterval == 0 || step == totalSteps)
            {
                Record(new MetricRecord
                {
                    Step = step, Tokens = tokens, Loss = result.Loss, Lr = lr, GradNorm = result.GradNorm, TokensPerSecond = processed,
                    MemoryMb = Throughput.ProcessMemoryMb(), SkippedSteps = skippedTotal, ElapsedSeconds = Elapsed(), Time = DateTimeOffset.UtcNow,
                });
                var eta = TimeSpan.FromSeconds(recentStep.TotalSeconds * (totalSteps - step));
                if (progress.Enabled) progress.Draw(step, totalSteps, result.Loss, lr, processed, eta, null);
                else if (logTimer.Elapsed.TotalSeconds >= 10 || step == totalSteps || step <= 1)
                {
                    _log.Information("Step {Step}/{Total} epoch {Epoch:F2} loss {Loss:F4} lr {Lr:E2} grad-norm {GradNorm:F3} {TokensPerSecond:F0} tok/s ETA {Eta}",
                        step, totalSteps, source.EpochProgress, result.Loss, lr, result.GradNorm, processed, ProgressLine.Format(eta));
                    logTimer.Restart();
                }
            }
            options.AfterStep?.Invoke(step);
            if (c.Eval.Interval > 0 && step % c.Eval.Interval == 0 && step < totalSteps) Evaluate();
            if (step % c.Checkpoint.Interval == 0 && step < totalSteps) Save("interval");
        }
        Evaluate();
        return Finish(TrainEnd.Completed, "final", $"finished {step} steps ({tokens:N0} assistant tokens trained on)");
    }

    /// <summary>Refuses to resume a checkpoint made with a different method, base model or adapter shape.</summary>
    void CheckCompatible(string checkpointDir)
    {
        var stored = FinetuneConfigLoader.Parse(File.ReadAllText(Path.Combine(checkpointDir, FinetuneCheckpointFiles.Config)), checkpointDir);
        var c = config;
        if (stored.Method != c.Method) throw new ConfigError($"{checkpointDir} was trained with method {stored.Method}, the config says {c.Method}");
        if (stored.Model.InitFrom != c.Model.InitFrom) throw new ConfigError($"{checkpointDir} was trained from {stored.Model.InitFrom ?? "a random init"}, the config says {c.Model.InitFrom ?? "a random init"}");
        if (c.Method == "lora" && stored.Lora.ToLoraConfig() is var s && (s.Rank != c.Lora.Rank || !s.TargetModules.SequenceEqual(c.Lora.TargetModules)))
            throw new ConfigError($"{checkpointDir} has LoRA rank {s.Rank} on {string.Join("/", s.TargetModules)}; the config asks for rank {c.Lora.Rank} on {string.Join("/", c.Lora.TargetModules)}");
    }

    (SftDataset Train, SftDataset? Eval) LoadData(FinetuneConfig c, ITextTokenizer tokenizer, Inference.ChatTemplates.IChatTemplate template)
    {
        var policy = c.Data.Malformed == "skip" ? MalformedRecordPolicy.Skip : MalformedRecordPolicy.Error;
        List<InstructionExample> Read(IEnumerable<string> files)
        {
            var all = new List<InstructionExample>();
            foreach (var file in files)
            {
                var examples = InstructionDataReader.Read(file, policy, out var report);
                _log.Information("Read {File}: {Loaded} examples ({Formats}), {Skipped} malformed skipped", file, report.Loaded,
                    string.Join(", ", report.Formats.Select(f => $"{f.Value} {f.Key}")), report.Skipped);
                foreach (var (problem, count) in report.SkippedBy) _log.Warning("Skipped {Count} record(s) of {File}: {Problem}", count, file, problem);
                foreach (var example in report.Examples) _log.Debug("Skipped {Example}", example);
                all.AddRange(examples);
            }
            return all;
        }

        var trainExamples = Read(c.Data.Train);
        List<InstructionExample> evalExamples;
        if (c.Data.Eval.Count > 0) evalExamples = Read(c.Data.Eval);
        else
        {
            // Deterministic held-out split by the run's seed.
            var order = Enumerable.Range(0, trainExamples.Count).ToArray();
            new Random(unchecked((int)c.Seed)).Shuffle(order);
            int held = (int)Math.Round(trainExamples.Count * c.Data.EvalFraction);
            evalExamples = order.Take(held).Order().Select(i => trainExamples[i]).ToList();
            trainExamples = order.Skip(held).Order().Select(i => trainExamples[i]).ToList();
        }
        if (c.Data.MaxExamples is int max && trainExamples.Count > max) trainExamples = trainExamples.Take(max).ToList();
        if (trainExamples.Count == 0) throw new ConfigError("no usable training examples in data.train");

        var sft = new SftOptions { SeqLen = c.SeqLen, Pack = c.Pack, MinPromptTokens = c.MinPromptTokens, MinResponseTokens = c.MinResponseTokens };
        var train = SftDataset.Build(trainExamples, template, tokenizer, sft);
        LogStats("train", train.Stats);
        SftDataset? eval = null;
        if (evalExamples.Count > 0)
        {
            eval = SftDataset.Build(evalExamples, template, tokenizer, sft);
            LogStats("eval", eval.Stats);
        }
        return (train, eval);
    }

    void LogStats(string split, SftStats s) =>
        _log.Information("{Split}: {Examples} examples → {Rows} rows; {Fit} fit, {PromptCut} prompt-truncated, {ReplyCut} reply-truncated, {Dropped} dropped; " +
                         "{Targets:N0} assistant tokens, {Padding:N0} padding tokens",
            split, s.Examples, s.Rows, s.Fit, s.PromptTruncated, s.ResponseTruncated, s.Dropped, s.TargetTokens, s.PaddingTokens);

}

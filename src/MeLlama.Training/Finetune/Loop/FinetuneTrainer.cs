using MeLlama.Model;
using MeLlama.Core.IO;
using MeLlama.Tokenization;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using MeLlama.Training.Finetune.Config;
using MeLlama.Training.Finetune.Data;
using MeLlama.Training.Finetune.Engine;
using MeLlama.Training.Loop;
using MeLlama.Training.Metrics;
using MeLlama.Training.Optim;
using MeLlama.Training.Runtime;
using MeLlama.Training.Sources;
using Serilog;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Finetune.Loop;

/// <summary>How one fine-tuning invocation runs: the controls every trainer takes (log, resume, time limit, signals, progress, test hook).</summary>
public sealed record FinetuneOptions : RunControls
{
    /// <summary>The ranks of a multi-rank run (<c>method: full</c> sharded, <c>method: lora</c> data parallel); null: one process.</summary>
    public TrainingWorld? World { get; init; }
}

/// <summary>
/// Instruction tuning with the pretraining machinery: the same checkpoint store (atomic, verified, pruned, newest good
/// one resumed), <see cref="TrainerState"/>, AdamW with fp32 master weights, cosine schedule, metrics.jsonl/TensorBoard,
/// progress line, preemption signals and wall-clock budget (exit 75), non-finite step handling. What differs from
/// pretraining: the data (instruction conversations → masked rows, <see cref="SftDataset"/>), the loss (assistant tokens
/// only, <see cref="SftTrainStep"/>), the model (frozen base + LoRA adapters, or full), and what a checkpoint holds
/// (the trained weights only; the base is reloaded from model.init_from).
/// <para>Several ranks (<see cref="FinetuneOptions.World"/>, <c>method: full</c>): the FSDP engine of pretraining with
/// the fine-tuning loss (<see cref="SftLabels"/>), a model that starts on the meta device (each rank reads only its
/// slices of model.init_from), every rank drawing the same global batch and keeping its block
/// (<see cref="RankShareSource"/>), sharded checkpoints that resume on any number of ranks, and an evaluation whose sums
/// are reduced over ranks. Only rank 0 writes metrics and the run's files.</para>
/// <para>Several ranks with <c>method: lora</c>: data parallelism. Every rank builds the whole model as one process does
/// (frozen base from model.init_from plus the seeded adapters), trains on its block of the global batch
/// (<see cref="RankShareSource"/>) and <see cref="SftTrainStep"/> sums the adapter gradients over ranks, normalised by
/// the global target count: N ranks train what one process trains. Rank 0 writes the ordinary one-process LoRA
/// checkpoint, which resumes on any number of ranks.</para>
/// </summary>
public sealed class FinetuneTrainer(FinetuneConfig config, FinetuneOptions options)
{
    readonly ILogger _log = options.Log;

    public static long TotalSteps(FinetuneConfig c, int rows) =>
        c.MaxSteps ?? Math.Max(1, (long)Math.Ceiling(c.Epochs * rows / ((double)c.MicroBatch * c.GradAccum)));

    public TrainOutcome Run() => RunStart.RunWithFallback(RunOnce);

    /// <summary>One attempt of <see cref="Run"/>; null when its checkpoint failed its checksum while loading (added to <paramref name="attempts"/>' rejected set).</summary>
    TrainOutcome? RunOnce(RunAttempts attempts)
    {
        var c = config;
        var world = options.World ?? TrainingWorld.Single();
        var device = TrainingWorld.ResolveDevice(c.Device, world.Environment);
        var dtype = ModelFactory.ComputeDtype(c.Precision);
        if (world.IsDistributed)
        {
            // A rank started with other overrides would train something else while exchanging gradients with the rest.
            world.RequireSame("the resolved recipe", FinetuneConfigLoader.ToJson(c));
        }

        // ---- where to start
        var start = RunStart.Open(c.RunDir, c.Threads, c.Seed, world, options, attempts, checkResumable: CheckCompatible,
            filesVerifiedWhileLoading: world.IsDistributed && c.Method == "full" ? ShardedCheckpoint.FilesVerifiedWhileLoading(world.Size, ShardingStrategies.Parse(c.Parallel.Strategy)) : null);
        var (resumeFrom, state) = (start.ResumeFrom, start.State);

        // ---- tokenizer, template, data
        var tokenizer = FinetuneModelBuilder.LoadTokenizer(c);
        var template = FinetuneModelBuilder.LoadTemplate(c);
        var (train, eval) = LoadData(c, tokenizer, template, world.IsRoot);

        // LoRA over several ranks is data parallel on the one-process engine; a sharded checkpoint still goes to
        // RunSharded, which says that only method full writes those.
        bool dataParallel = world.IsDistributed && c.Method == "lora" && !(resumeFrom != null && ShardedCheckpoint.IsSharded(resumeFrom.Dir));
        if (!dataParallel && StepEngines.UsesShardedEngine(world, resumeFrom?.Dir))
            return RunSharded(start, world, attempts, tokenizer, template, train, eval, device, dtype);
        if (dataParallel) world.RequireSame("the tokenised training and eval rows", RowsDigest(train, eval));

        // ---- model and step engine
        string? storedBase = resumeFrom is not null && c.Model.InitFrom is null && c.Method == "lora" ? Path.Combine(resumeFrom.Dir, FinetuneCheckpointFiles.BaseModel) : null;
        using var built = FinetuneModelBuilder.Build(c, tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId, device, dtype, storedBase);
        var model = built.Model;
        var mc = model.Config;
        if (c.SeqLen + 1 > mc.MaxPositionEmbeddings)
            throw new ConfigError($"seq_len + 1 = {c.SeqLen + 1} exceeds the model's max_position_embeddings {mc.MaxPositionEmbeddings}");
        using var engine = new SftTrainStep(model, new TrainStepOptions(c.Optimizer.Beta1, c.Optimizer.Beta2, c.Optimizer.Eps,
            c.Optimizer.WeightDecay, c.Optimizer.GradClip, ActivationCheckpointing: false), dataParallel ? world.Comm : null);
        if (resumeFrom != null && !start.TryLoadState(engine, attempts.Rejected)) return null;
        long trainable = model.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        long totalSteps = TotalSteps(c, train.Rows.Count);
        long rowsPerStep = (long)c.MicroBatch * c.GradAccum;
        int perRank = RankShareSource.MicroBatchesFor(c.MicroBatch, checked((int)rowsPerStep), world.Size);
        var schedule = CosineSchedule.Create(c.Optimizer.Lr, c.Schedule.MinLr, c.Schedule.MinLrRatio, c.Schedule.WarmupRatio, totalSteps);
        var log = world.IsRoot ? _log : Serilog.Core.Logger.None;
        log.Information("Fine-tuning ({Method}{Lora}) a {Params:N0}-parameter model on {Device}, {Precision}: {Trainable:N0} trainable parameters; " +
                         "template {Template}; {Rows} rows × {Epochs:F2} epochs = {Steps} steps of {RowsPerStep} rows × {SampleTokens} tokens",
            c.Method, c.Method == "lora" ? $" r={c.Lora.Rank} alpha={c.Lora.Alpha} on {string.Join("/", c.Lora.TargetModules)}" : "",
            mc.ParameterCount(), device.ToString(), c.Precision, trainable, template.Id, train.Rows.Count,
            totalSteps * rowsPerStep / (double)train.Rows.Count, totalSteps, rowsPerStep, c.SeqLen + 1);
        if (dataParallel)
        {
            log.Information("LoRA data parallel over {Ranks} ranks: each holds the whole model and runs {PerRank} micro-batch(es) of {Micro} rows per step; " +
                            "adapter gradients are summed over ranks", world.Size, perRank, c.MicroBatch);
            int padding = RankShareSource.PaddingRows(c.MicroBatch, checked((int)rowsPerStep), world.Size);
            if (padding > 0)
                log.Warning("micro_batch × grad_accum = {Rows} rows per step do not split evenly into {Ranks} ranks × micro-batches of {Micro}: " +
                            "{Padding} empty row(s) per step are computed for nothing; make grad_accum a multiple of the number of ranks", rowsPerStep, world.Size, c.MicroBatch, padding);
        }

        var stream = new SftSampleStream(train, c.Seed, state?.Sampler);
        // One process draws its micro-batches straight from the stream; data-parallel ranks each keep their block of the global batch.
        using ISampleSource source = dataParallel ? new RankShareSource(stream, c.MicroBatch, checked((int)rowsPerStep), world.Rank, world.Size) : stream;
        // ---- the loop
        return Loop(start, engine, source, stream, schedule, device, eval, world, mc, totalSteps, perRank, rowsPerStep,
            writeExtra: tmp =>
            {
                if (c.Model.InitFrom is null && c.Method == "lora")
                    SafeTensorsWriter.Write(Path.Combine(tmp, FinetuneCheckpointFiles.BaseModel), built.Lora!.BaseParameters(), new Dictionary<string, string> { ["format"] = "pt" });
            },
            // Each rank draws its own dropout masks (one seed would give every rank the same masks on different rows);
            // one process and rank 0 keep the run's seed.
            beforeStep: step => built.Lora?.ReseedDropout(unchecked(c.Seed + (ulong)world.Rank * 0x9E3779B97F4A7C15UL), step));
    }

    /// <summary>
    /// Full fine-tuning with the sharded engine: several ranks, or one process continuing a sharded checkpoint. The model
    /// is built on the meta device and each rank fills only its slices (from model.init_from, the seeded init, or the
    /// checkpoint), so no rank ever holds the whole model in fp32.
    /// </summary>
    TrainOutcome? RunSharded(RunStart start, TrainingWorld world, RunAttempts attempts, ITextTokenizer tokenizer,
        Inference.ChatTemplates.IChatTemplate template, SftDataset train, SftDataset? eval, Device device, ScalarType dtype)
    {
        var c = config;
        var (resumeFrom, state) = (start.ResumeFrom, start.State);
        // Every rank tokenised the data itself: a node that read another file at the same path (a node-local copy,
        // a file still being written) would train on other rows without any error, so the rows are compared first.
        if (world.IsDistributed) world.RequireSame("the tokenised training and eval rows", RowsDigest(train, eval));
        if (c.Method != "full") throw new ConfigError($"{resumeFrom?.Dir} is a sharded checkpoint, which only method full writes; the config says {c.Method}");
        LlamaConfig mc = resumeFrom != null ? LlamaConfig.FromHfJson(Path.Combine(resumeFrom.Dir, CheckpointFiles.ModelConfig))
            : c.Model.InitFrom is { } hf ? HfCheckpoint.LoadConfig(hf)
            : ModelFactory.FromArch(c.Model.Arch!, c.Model.InitStd, tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId);
        if (tokenizer.VocabSize > mc.VocabSize)
            throw new ConfigError($"the tokenizer has {tokenizer.VocabSize} ids but the model's vocabulary only {mc.VocabSize}");
        if (c.SeqLen + 1 > mc.MaxPositionEmbeddings)
            throw new ConfigError($"seq_len + 1 = {c.SeqLen + 1} exceeds the model's max_position_embeddings {mc.MaxPositionEmbeddings}");
        using var model = ModelFactory.Meta(mc, dtype);
        // One process continuing a sharded checkpoint (e.g. 8 GPUs → 1) needs the engine that reads and re-slices shards.
        using var singleRankComm = world.IsDistributed ? null : new MeLlama.Distributed.SingleProcessCollectives();
        if (singleRankComm != null) _log.Information("{Checkpoint} is sharded: continuing with the sharded engine on one rank", resumeFrom!.Dir);
        using var masters = ShardedMasters.For(resumeFrom != null, c.Model.InitFrom, mc, c.Seed, device);
        using var engine = StepEngines.CreateSharded(model, new TrainStepOptions(c.Optimizer.Beta1, c.Optimizer.Beta2, c.Optimizer.Eps,
            c.Optimizer.WeightDecay, c.Optimizer.GradClip, ActivationCheckpointing: false), world.Comm ?? singleRankComm!, c.Parallel.Strategy,
            masters.Source, device, SftLabels.Instance);
        if (resumeFrom != null && !start.TryLoadState(engine, attempts.Rejected)) return null;

        long totalSteps = TotalSteps(c, train.Rows.Count);
        int rowsPerStep = checked(c.MicroBatch * c.GradAccum);
        int perRank = RankShareSource.MicroBatchesFor(c.MicroBatch, rowsPerStep, world.Size);
        int padding = RankShareSource.PaddingRows(c.MicroBatch, rowsPerStep, world.Size);
        var schedule = CosineSchedule.Create(c.Optimizer.Lr, c.Schedule.MinLr, c.Schedule.MinLrRatio, c.Schedule.WarmupRatio, totalSteps);
        if (world.IsRoot)
        {
            _log.Information("Fine-tuning (full, {Strategy} over {Ranks} rank(s)) a {Params:N0}-parameter model on {Device}, {Precision}; template {Template}; " +
                             "{Rows} rows × {Epochs:F2} epochs = {Steps} steps of {RowsPerStep} rows × {SampleTokens} tokens; each rank runs {PerRank} micro-batch(es) of {Micro} rows",
                c.Parallel.Strategy, world.Size, mc.ParameterCount(), device.ToString(), c.Precision, template.Id, train.Rows.Count,
                totalSteps * (double)rowsPerStep / train.Rows.Count, totalSteps, rowsPerStep, c.SeqLen + 1, perRank, c.MicroBatch);
            if (padding > 0)
                _log.Warning("micro_batch × grad_accum = {Rows} rows per step do not split evenly into {Ranks} ranks × micro-batches of {Micro}: " +
                             "{Padding} empty row(s) per step are computed for nothing; make grad_accum a multiple of the number of ranks", rowsPerStep, world.Size, c.MicroBatch, padding);
        }

        var stream = new SftSampleStream(train, c.Seed, state?.Sampler);
        using var source = new RankShareSource(stream, c.MicroBatch, rowsPerStep, world.Rank, world.Size);
        return Loop(start, engine, source, stream, schedule, device, eval, world, mc, totalSteps, perRank, rowsPerStep);
    }

    /// <summary>
    /// The fine-tuning loop all three paths share (one process, data-parallel LoRA, sharded full): writes the resolved
    /// recipe (rank 0), counts assistant tokens per step and every row token for throughput, evaluates over ranks.
    /// </summary>
    TrainOutcome? Loop(RunStart start, ITrainStep engine, ISampleSource source, SftSampleStream stream, CosineSchedule schedule, Device device,
        SftDataset? eval, TrainingWorld world, LlamaConfig mc, long totalSteps, int perRank, long rowsPerStep,
        Action<string>? writeExtra = null, Action<long>? beforeStep = null)
    {
        var c = config;
        string resolvedConfig = FinetuneConfigLoader.ToJson(c);
        if (world.IsRoot) AtomicFile.WriteAllText(Path.Combine(c.RunDir, FinetuneCheckpointFiles.Config), resolvedConfig);
        return new TrainLoop(start, new LoopSettings
        {
            RunDir = c.RunDir, MicroBatch = c.MicroBatch, SeqLen = c.SeqLen, GradAccum = perRank, TotalSteps = totalSteps, MaxBadSteps = c.MaxBadSteps,
            LogInterval = c.LogInterval, EvalInterval = c.Eval.Interval, CheckpointInterval = c.Checkpoint.Interval, KeepLast = c.Checkpoint.KeepLast,
            Precision = c.Precision, Tensorboard = c.Tensorboard, TokenUnit = "assistant tokens trained on",
        }, new LoopParts
        {
            Engine = engine, Source = source, Schedule = schedule, Device = device,
            // A step counts the (global) assistant tokens it trained on; throughput counts the global batch's row tokens.
            TokensOf = result => result.Tokens, ProcessedTokensPerStep = rowsPerStep * (c.SeqLen + 1),
            Evaluate = eval is null || eval.Rows.Count == 0 || c.Eval.Batches == 0 ? null : () => [new EvalResult(EvalDomain, Evaluate(engine, eval, world))],
            WriteRunFiles = tmp =>
            {
                writeExtra?.Invoke(tmp);
                File.WriteAllText(Path.Combine(tmp, FinetuneCheckpointFiles.Config), resolvedConfig);
                File.WriteAllText(Path.Combine(tmp, CheckpointFiles.ModelConfig), mc.ToHfJson("float32"));
            },
            BeforeStep = beforeStep,
            StepNote = () => $"epoch {stream.EpochProgress:F2}",
        }).Run();
    }

    /// <summary>The held-out set's name in metrics and <see cref="TrainOutcome.LastEval"/>.</summary>
    public const string EvalDomain = "instructions";

    /// <summary>
    /// Assistant-token loss over the first eval.batches micro-batches of the held-out rows. On several ranks batch i is
    /// rank (i mod N)'s; every rank runs as many forwards as the busiest one (the sharded engine gathers parameters in
    /// each), ignores its padding forwards' results, and the sums are reduced, so every rank gets the one-process value.
    /// </summary>
    /// <summary>
    /// Row counts and XXH128 of the training and eval rows (ids with the loss mask folded in), for the cross-rank check:
    /// ranks on other data would train differently, and ranks disagreeing on whether there is an eval set would not
    /// even issue the same collectives.
    /// </summary>
    static string RowsDigest(SftDataset train, SftDataset? eval)
    {
        using var digest = new ContentDigest(DigestAlgorithm.Xxh128);
        foreach (var row in train.Rows.Concat(eval?.Rows ?? [])) digest.Append(System.Runtime.InteropServices.MemoryMarshal.AsBytes(row.AsSpan()));
        return $"{train.Rows.Count} + {eval?.Rows.Count ?? 0} rows, xxh128 {digest.FinishHex()}";
    }

    EvalSums Evaluate(ITrainStep engine, SftDataset eval, TrainingWorld? world = null)
    {
        var c = config;
        int ranks = world?.Size ?? 1, rank = world?.Rank ?? 0;
        int width = eval.SampleTokens;
        int total = Math.Min(c.Eval.Batches, (eval.Rows.Count + c.MicroBatch - 1) / c.MicroBatch);
        int rounds = (total + ranks - 1) / ranks;
        var sums = new EvalSums();
        for (int round = 0; round < rounds; round++)
        {
            int batch = round * ranks + rank;
            if (batch >= total)
            {
                using var padding = torch.zeros([1, width], ScalarType.Int64);
                engine.Evaluate(padding);
                continue;
            }
            int start = batch * c.MicroBatch;
            int n = Math.Min(c.MicroBatch, eval.Rows.Count - start);
            var buffer = new long[n * width];
            for (int i = 0; i < n; i++) eval.Rows[start + i].CopyTo(buffer, i * width);
            using var t = torch.tensor(buffer, [n, width]);
            sums += engine.Evaluate(t);
        }
        if (world is { IsDistributed: true })
        {
            var reduced = world.Sum(sums.SumNll, sums.Tokens);
            sums = new EvalSums(reduced[0], (long)reduced[1]);
        }
        return sums;
    }

    /// <summary>Refuses to resume a pretraining checkpoint, or one made with a different method, base model or adapter shape.</summary>
    void CheckCompatible(string checkpointDir)
    {
        if (!FinetuneCheckpointFiles.IsFinetuneCheckpoint(checkpointDir))
            throw new ConfigError($"{config.RunDir} holds pretraining checkpoints, not fine-tuning ones; choose another run_dir");
        var stored = FinetuneConfigLoader.Parse(File.ReadAllText(Path.Combine(checkpointDir, FinetuneCheckpointFiles.Config)), checkpointDir);
        var c = config;
        if (stored.Method != c.Method) throw new ConfigError($"{checkpointDir} was trained with method {stored.Method}, the config says {c.Method}");
        if (stored.Model.InitFrom != c.Model.InitFrom) throw new ConfigError($"{checkpointDir} was trained from {stored.Model.InitFrom ?? "a random init"}, the config says {c.Model.InitFrom ?? "a random init"}");
        if (c.Method == "lora" && stored.Lora.ToLoraConfig() is var s && (s.Rank != c.Lora.Rank || !s.TargetModules.SequenceEqual(c.Lora.TargetModules)))
            throw new ConfigError($"{checkpointDir} has LoRA rank {s.Rank} on {string.Join("/", s.TargetModules)}; the config asks for rank {c.Lora.Rank} on {string.Join("/", c.Lora.TargetModules)}");
    }

    (SftDataset Train, SftDataset? Eval) LoadData(FinetuneConfig c, ITextTokenizer tokenizer, Inference.ChatTemplates.IChatTemplate template, bool logStats = true)
    {
        // Every rank reads the same files; one copy of the report is enough.
        var _log = logStats ? this._log : Serilog.Core.Logger.None;
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
        if (logStats) LogStats("train", train.Stats);
        SftDataset? eval = null;
        if (evalExamples.Count > 0)
        {
            eval = SftDataset.Build(evalExamples, template, tokenizer, sft);
            if (logStats) LogStats("eval", eval.Stats);
        }
        return (train, eval);
    }

    void LogStats(string split, SftStats s) =>
        _log.Information("{Split}: {Examples} examples → {Rows} rows; {Fit} fit, {PromptCut} prompt-truncated, {ReplyCut} reply-truncated, {Dropped} dropped; " +
                         "{Targets:N0} assistant tokens, {Padding:N0} padding tokens",
            split, s.Examples, s.Rows, s.Fit, s.PromptTruncated, s.ResponseTruncated, s.Dropped, s.TargetTokens, s.PaddingTokens);

}

using System.Diagnostics;
using System.Text.Json;
using MeLlama.Core.IO;
using MeLlama.Distributed;
using MeLlama.Model;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Config;
using MeLlama.Training.Engine;
using MeLlama.Training.Engine.Sharded;
using MeLlama.Training.Metrics;
using MeLlama.Training.Optim;
using MeLlama.Training.Sources;
using Serilog;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Loop;

/// <summary>
/// The continual-pretraining loop: resume from the newest good checkpoint, draw micro-batches from the blended stream,
/// step through <see cref="ITrainStep"/>, evaluate held-out sets, checkpoint, and stop cleanly on preemption signals,
/// a wall-clock budget, the step/token budget or repeated non-finite steps.
/// <para>On several ranks (<see cref="TrainerOptions.World"/>) every rank runs this loop in lockstep: each draws its
/// partition of the global batch, the sharded engine reduces loss and gradients, every stop decision is taken on values
/// reduced across ranks, checkpoints are written by all ranks together (<see cref="CheckpointStore.SaveCoordinated"/>),
/// and only rank 0 writes metrics, TensorBoard events and the progress line.</para>
/// </summary>
public sealed class Trainer
{
    readonly TrainConfig _config;
    readonly TrainerOptions _options;
    readonly ILogger _log;

    public Trainer(TrainConfig config, TrainerOptions options)
    {
        _config = config;
        _options = options;
        _log = options.Log;
    }

    /// <summary>Micro-batches per optimizer step for one rank.</summary>
    public static int GradAccumSteps(TrainConfig c, int worldSize = 1)
    {
        long perMicro = (long)c.SeqLen * c.MicroBatch * worldSize;
        if (c.GlobalBatchTokens is { } global)
        {
            if (global % perMicro != 0)
                throw new ConfigError($"global_batch_tokens ({global}) must be a multiple of seq_len × micro_batch × ranks ({perMicro})");
            long accum = global / perMicro;
            if (c.GradAccum is { } explicitAccum && explicitAccum != accum)
                throw new ConfigError($"grad_accum ({explicitAccum}) disagrees with global_batch_tokens ({global} = {accum} × {perMicro})");
            return checked((int)accum);
        }
        return c.GradAccum ?? 1;
    }

    public static long TotalSteps(TrainConfig c, long tokensPerStep) =>
        c.MaxSteps ?? (c.MaxTokens!.Value + tokensPerStep - 1) / tokensPerStep;

    public TrainOutcome Run()
    {
        // On one process the resume reads the newest good-looking checkpoint's weights and optimizer state once,
        // checking their sha256 as they load (instead of hashing them first and reading them again). A mismatch is
        // only found once the model and engine exist, so that attempt is dropped and the run starts over, skipping
        // the rejected checkpoint exactly as if its up-front check had failed.
        var rejected = new Dictionary<long, string>();
        while (true)
            if (RunOnce(rejected) is { } outcome) return outcome;
    }

    /// <summary>One attempt of <see cref="Run"/>; null when the checkpoint it resumed from failed its checksum while loading (added to <paramref name="rejected"/>).</summary>
    TrainOutcome? RunOnce(Dictionary<long, string> rejected)
    {
        var c = _config;
        var world = _options.World ?? TrainingWorld.Single();
        var wall = Stopwatch.StartNew();
        var startUtc = DateTime.UtcNow;
        torch.set_num_threads(world.IsDistributed ? world.Threads(c.Threads) : c.Threads > 0 ? c.Threads : Environment.ProcessorCount);
        torch.manual_seed(unchecked((long)c.Seed));
        var device = TrainingWorld.ResolveDevice(c.Device, world.Environment);
        var dtype = ModelFactory.ComputeDtype(c.Precision);
        // A rank started with other overrides would train something else while exchanging gradients with the rest.
        world.RequireSame("the resolved recipe", ConfigLoader.ToJson(c));
        Directory.CreateDirectory(c.RunDir);
        var store = new CheckpointStore(c.RunDir, world.IsRoot ? _log : Serilog.Core.Logger.None);
        // Only rank 0 removes leftovers: their owner's pid can only be checked on its own node.
        if (world.IsRoot) store.CleanTemporaries();

        // ---- where to start
        CheckpointCheck? resumeFrom = null;
        TrainerState? state = null;
        var existing = store.List();
        if (_options.Resume)
        {
            // All ranks verify together (rank 0's candidate list, the hashing split across ranks) and agree on one step.
            // On one process the engine's loader verifies the large files itself (see Run).
            var hashedWhileLoading = world.IsDistributed ? null : OptimizerCheckpoint.FilesVerifiedWhileLoading;
            resumeFrom = store.FindLatestGood(world, out var skipped, hashedWhileLoading, rejected);
            if (resumeFrom == null && existing.Count > 0 && world.IsRoot)
                _log.Warning("Run folder {RunDir} has {Count} checkpoint folder(s) but none is complete; starting from scratch", c.RunDir, existing.Count);
            if (resumeFrom != null)
            {
                state = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(resumeFrom.Dir, CheckpointFiles.TrainerState)), TrainerStateJson.Default.TrainerState)
                    ?? throw new InvalidDataException($"{resumeFrom.Dir}: empty {CheckpointFiles.TrainerState}");
                _log.Information("Resuming from {Checkpoint} (step {Step}, {Tokens:N0} tokens){Fallback}", resumeFrom.Dir, state.Step, state.Tokens,
                    skipped.Count > 0 ? $"; skipped {skipped.Count} newer incomplete checkpoint(s)" : "");
                if (state.Precision != c.Precision)
                    _log.Warning("Checkpoint was trained in {Old}, continuing in {New}", state.Precision, c.Precision);
            }
        }
        else if (existing.Count > 0)
            throw new ConfigError($"{c.RunDir} already has checkpoints; resume (default) or choose another run_dir");

        // ---- model and step engine
        // The sharded engine starts from a shape-only model and fills only each rank's slices (no rank holds the full model).
        bool sharded = StepEngines.UsesShardedEngine(world, resumeFrom?.Dir);
        LlamaForCausalLM model;
        if (resumeFrom != null)
        {
            var modelConfig = LlamaConfig.FromHfJson(Path.Combine(resumeFrom.Dir, CheckpointFiles.ModelConfig));
            model = sharded ? ModelFactory.Meta(modelConfig, dtype) : ModelFactory.Empty(modelConfig, device, dtype);
        }
        else if (c.Model.InitFrom is { } hf)
        {
            _log.Information("Continual pretraining from {InitFrom}", hf);
            model = sharded ? ModelFactory.Meta(HfCheckpoint.LoadConfig(hf), dtype) : HfCheckpoint.LoadModel(hf, device, dtype);
        }
        else
        {
            var modelConfig = ModelFactory.FromArch(c.Model.Arch!, c.Model.InitStd, _options.TokenizerVocab ?? _options.Data.TokenizerVocabSize);
            model = sharded ? ModelFactory.Meta(modelConfig, dtype) : ModelFactory.RandomInit(modelConfig, device, dtype, c.Seed);
        }
        using var modelLifetime = model;
        var mc = model.Config;
        if (_options.Data.TokenizerVocabSize is { } dataVocab && dataVocab > mc.VocabSize)
            throw new ConfigError($"the datasets were tokenized with a {dataVocab}-id vocabulary but the model has only {mc.VocabSize} embeddings");
        // Global batch = ranks × micro_batch × grad_accum sequences; each rank draws its own micro_batch block of it.
        int accum = GradAccumSteps(c, world.Size);
        long tokensPerStep = (long)c.SeqLen * c.MicroBatch * accum * world.Size;
        long totalSteps = TotalSteps(c, tokensPerStep);
        var schedule = CosineSchedule.Create(c.Optimizer.Lr, c.Schedule.MinLr, c.Schedule.MinLrRatio, c.Schedule.WarmupRatio, totalSteps);
        // One process continuing a sharded checkpoint (e.g. 8 GPUs → 1 for a quick look) needs the engine that reads shards.
        using var singleRankComm = !world.IsDistributed && resumeFrom != null && ShardedCheckpoint.IsSharded(resumeFrom.Dir) ? new SingleProcessCollectives() : null;
        if (singleRankComm != null) _log.Information("{Checkpoint} is sharded: continuing with the sharded engine on one rank", resumeFrom!.Dir);
        using var shardedMasters = sharded ? ShardedMasters.For(resumeFrom != null, c.Model.InitFrom, mc, c.Seed, device) : null;
        using var engine = StepEngines.Create(model, new TrainStepOptions(c.Optimizer.Beta1, c.Optimizer.Beta2, c.Optimizer.Eps,
            c.Optimizer.WeightDecay, c.Optimizer.GradClip, c.ActivationCheckpointing), world, c.Parallel.Strategy, singleRankComm, shardedMasters?.Source, device);
        if (resumeFrom != null && state != null)
        {
            try { engine.LoadState(resumeFrom.Dir, state.OptimizerSteps); }
            catch (CheckpointCorruptException e) when (!world.IsDistributed)
            {
                _log.Warning("Checkpoint {Checkpoint} is not usable: {Problem}; starting over from an older one", Path.GetFileName(resumeFrom.Dir), e.Problem);
                rejected[resumeFrom.Step] = e.Problem;
                return null;
            }
            RngCheckpoint.Restore(resumeFrom.Dir);
        }
        else if (dtype != ScalarType.Float32 && engine is SingleProcessTrainStep single)
        {
            // Master weights from full precision, not from the bf16 compute copy.
            if (c.Model.InitFrom is { } hfDir)
            {
                using var hfWeights = SafeTensorsCheckpoint.Open(hfDir);
                single.LoadMasterWeights(name => hfWeights.ReadTensor(name, ScalarType.Float32, device));
            }
            else
            {
                using var fp32 = ModelFactory.RandomInit(mc, device, ScalarType.Float32, c.Seed);
                var reference = fp32.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
                single.LoadMasterWeights(name => reference[name].alias());
            }
        }
        long matmulParams = ModelFactory.MatmulParameters(mc);
        double flopsPerToken = Throughput.TrainFlopsPerToken(matmulParams, mc.NumLayers, mc.HiddenSize, c.SeqLen);
        _log.Information("Model: {Params:N0} parameters ({Layers} layers, d={Hidden}, vocab {Vocab}), {Precision} on {Device}; " +
                         "{Ranks} × {Accum} × {Micro} × {SeqLen} = {TokensPerStep:N0} tokens/step, {TotalSteps} steps, threads {Threads}{Sharding}",
            mc.ParameterCount(), mc.NumLayers, mc.HiddenSize, mc.VocabSize, c.Precision, device.ToString(), world.Size, accum, c.MicroBatch, c.SeqLen,
            tokensPerStep, totalSteps, torch.get_num_threads(), world.IsDistributed ? $", {c.Parallel.Strategy} over {world.Size} ranks ({world.Comm!.Backend})" : "");

        // Only rank 0 measures (the ranks of a node share its cores); MFU is then per device: global tokens/s ÷ ranks.
        double? peakFlops = null;
        if (c.MeasurePeak && world.IsRoot)
        {
            peakFlops = Throughput.MeasurePeakFlops(device, dtype);
            _log.Information("Measured device peak: {Peak:F1} GFLOP/s ({Dtype} matmul)", peakFlops / 1e9, dtype);
        }

        // ---- data
        using var source = _options.Data.OpenTraining(c.SeqLen, c.Seed, state?.Sampler);
        var evalSets = _options.Data.OpenEvalSets(c.SeqLen);

        long step = state?.Step ?? 0, tokens = state?.Tokens ?? 0, skippedTotal = state?.SkippedSteps ?? 0;
        int consecutiveBad = state?.ConsecutiveBadSteps ?? 0;
        double elapsedBefore = state?.ElapsedSeconds ?? 0;
        double Elapsed() => elapsedBefore + wall.Elapsed.TotalSeconds;

        // One copy of what describes the run as a whole: rank 0's.
        using var metrics = world.IsRoot ? new MetricsLog(Path.Combine(c.RunDir, "metrics.jsonl"), step) : null;
        using var tensorboard = c.Tensorboard && world.IsRoot ? new TensorBoardLog(Path.Combine(c.RunDir, "tensorboard")) : null;
        var progress = new ProgressLine(_options.Progress && world.IsRoot);
        var firstEval = metrics != null ? ReadFirstEval(metrics.Path) : [];
        var lastEval = new Dictionary<string, double>();
        string? lastCheckpoint = resumeFrom?.Dir;
        long lastSavedStep = resumeFrom != null ? step : -1;
        var saveTime = TimeSpan.Zero;
        var budget = _options.TimeLimit is { } limit ? new TimeBudget(limit, startUtc) : null;
        if (world.IsRoot) AtomicFile.WriteAllText(Path.Combine(c.RunDir, "train_config.json"), ConfigLoader.ToJson(c));

        void Record(MetricRecord r)
        {
            metrics?.Write(r);
            tensorboard?.Write(r);
        }

        void Evaluate()
        {
            if (evalSets.Count == 0 || c.Eval.Batches == 0) return;
            progress.Break();
            model.eval();
            foreach (var set in evalSets)
            {
                var sums = new EvalSums();
                var batches = set.Batches(c.MicroBatch, c.SeqLen, c.Eval.Batches).ToList();
                // Held-out samples are dealt round-robin, so ranks can hold different batch counts; the sharded engine
                // gathers parameters in every forward, so every rank runs as many forwards as the busiest one and
                // ignores the results of its padding forwards.
                long rounds = world.IsDistributed ? (long)world.Max(batches.Count)[0] : batches.Count;
                for (int i = 0; i < rounds; i++)
                {
                    using var t = i < batches.Count
                        ? torch.tensor(batches[i], [batches[i].Length / (c.SeqLen + 1), c.SeqLen + 1])
                        : torch.zeros([1, c.SeqLen + 1], ScalarType.Int64);
                    var part = engine.Evaluate(t);
                    if (i < batches.Count) sums += part;
                }
                if (world.IsDistributed)
                {
                    var total = world.Sum(sums.SumNll, sums.Tokens);
                    sums = new EvalSums(total[0], (long)total[1]);
                }
                if (sums.Tokens == 0) continue;
                double loss = sums.MeanLoss;
                lastEval[set.Name] = loss;
                firstEval.TryAdd(set.Name, loss);
                Record(new MetricRecord { Kind = "eval", Step = step, Tokens = tokens, Domain = set.Name, Loss = loss, Perplexity = Math.Exp(loss),
                    ElapsedSeconds = Elapsed(), Time = DateTimeOffset.UtcNow });
                if (world.IsRoot) _log.Information("Eval step {Step} {Domain}: loss {Loss:F4} (ppl {Ppl:F2}, {Tokens:N0} tokens)", step, set.Name, loss, Math.Exp(loss), sums.Tokens);
            }
            model.train();
        }

        string Save(string reason)
        {
            progress.Break();
            var sw = Stopwatch.StartNew();
            var trainerState = new TrainerState
            {
                Step = step, Tokens = tokens, OptimizerSteps = engine.OptimizerSteps, SkippedSteps = skippedTotal,
                ConsecutiveBadSteps = consecutiveBad, TotalSteps = totalSteps, Sampler = source.State.DeepClone(), ElapsedSeconds = Elapsed(),
                Precision = c.Precision, Reason = reason, WorldSize = world.Size,
                Schedule = new ScheduleState { PeakLr = schedule.PeakLr, MinLr = schedule.MinLr, WarmupSteps = schedule.WarmupSteps, TotalSteps = schedule.TotalSteps },
            };
            // Every rank writes its part of the engine state into the shared folder; rank 0 the run's metadata.
            string dir = store.SaveCoordinated(step, world, engine.SaveState, tmp =>
            {
                RngCheckpoint.Save(tmp);
                File.WriteAllText(Path.Combine(tmp, CheckpointFiles.TrainerState), JsonSerializer.Serialize(trainerState, TrainerStateJson.Default.TrainerState));
                File.WriteAllText(Path.Combine(tmp, CheckpointFiles.Config), ConfigLoader.ToJson(c));
                File.WriteAllText(Path.Combine(tmp, CheckpointFiles.ModelConfig), mc.ToHfJson("float32"));
            });
            if (world.IsRoot) store.Prune(c.Checkpoint.KeepLast);
            saveTime = sw.Elapsed;
            lastCheckpoint = dir;
            lastSavedStep = step;
            _log.Information("Saved checkpoint {Checkpoint} ({Reason}, {Seconds:F1} s)", dir, reason, sw.Elapsed.TotalSeconds);
            return dir;
        }

        TrainOutcome Finish(TrainEnd end, string reason, string message)
        {
            if (lastSavedStep != step && (end != TrainEnd.Completed || c.Checkpoint.SaveFinal)) Save(reason);
            progress.Break();
            return new TrainOutcome(end, step, tokens, lastCheckpoint, firstEval, lastEval, message);
        }

        if (step == 0 && resumeFrom == null) Evaluate();

        var microBatches = new Tensor[accum];
        var buffer = new long[c.MicroBatch * (c.SeqLen + 1)];
        var stepTimer = new Stopwatch();
        var recentStep = TimeSpan.Zero;
        long lastLoggedStep = step;
        var logTimer = Stopwatch.StartNew();
        while (step < totalSteps)
        {
            // A signal or a nearly spent budget on any rank stops every rank at this same step (max over ranks).
            string? localSignal = _options.Signals?.Reason;
            bool localBudget = budget != null && recentStep > TimeSpan.Zero && budget.ShouldStop(DateTime.UtcNow, recentStep, saveTime);
            var stop = world.Max(SignalCode(localSignal), localBudget ? 1 : 0);
            if (stop[0] > 0)
            {
                string signal = SignalName((int)stop[0], localSignal);
                string where = localSignal != null ? "" : " (on another rank)";
                _log.Warning("Received {Signal}{Where}: saving at step {Step} and exiting with code {Code} so the job can be requeued", signal, where, step, Runtime.ExitCodes.Preempted);
                return Finish(TrainEnd.Preempted, "preempted-" + signal.ToLowerInvariant(), $"stopped by {signal} at step {step}");
            }
            if (stop[1] > 0)
            {
                _log.Warning("Wall-clock budget {Limit} nearly spent{Where}: saving at step {Step} and exiting with code {Code}", budget?.Limit, localBudget ? "" : " on another rank", step, Runtime.ExitCodes.Preempted);
                return Finish(TrainEnd.TimeLimit, "time-limit", $"time limit reached at step {step}");
            }

            stepTimer.Restart();
            double lr = schedule.LrAt(step);
            StepResult result;
            using (var scope = NewDisposeScope())
            {
                for (int i = 0; i < accum; i++)
                {
                    source.NextBatch(c.MicroBatch, buffer);
                    microBatches[i] = torch.tensor(buffer, [c.MicroBatch, c.SeqLen + 1]);
                }
                result = engine.Step(microBatches, lr);
            }
            Throughput.Sync(device);
            step++;
            tokens += tokensPerStep;
            recentStep = stepTimer.Elapsed;
            // The engine reduces loss and gradient norm, so ranks should agree already; reducing the verdict makes the
            // skip counters, and with them the divergence stop, identical on every rank by construction.
            bool skippedStep = world.IsDistributed ? world.Any(result.Skipped) : result.Skipped;

            if (skippedStep)
            {
                skippedTotal++;
                consecutiveBad++;
                progress.Break();
                _log.Warning("Step {Step}: non-finite {What} (loss {Loss}, grad norm {Norm}); update skipped ({Consecutive} in a row, {Total} in total)",
                    step, double.IsFinite(result.Loss) ? "gradient" : "loss", result.Loss, result.GradNorm, consecutiveBad, skippedTotal);
                if (consecutiveBad >= c.MaxBadSteps)
                {
                    string message = $"{consecutiveBad} consecutive steps had a non-finite loss or gradient (steps {step - consecutiveBad + 1}..{step}); " +
                                     "the weights and optimizer state are those of the last good step. Lower optimizer.lr, check the data, or resume to continue past these batches.";
                    _log.Error("Stopping: {Message}", message);
                    return Finish(TrainEnd.Diverged, "diverged", message);
                }
            }
            else consecutiveBad = 0;

            double tokensPerSecond = tokensPerStep / Math.Max(recentStep.TotalSeconds, 1e-9);
            double? mfu = peakFlops is { } peak ? tokensPerSecond * flopsPerToken / (peak * world.Size) : null;
            if (world.IsRoot && (step % c.LogInterval == 0 || step == totalSteps))
            {
                var record = new MetricRecord
                {
                    Step = step, Tokens = tokens, Loss = result.Loss, Lr = lr, GradNorm = result.GradNorm, TokensPerSecond = tokensPerSecond, Mfu = mfu,
                    MemoryMb = Throughput.ProcessMemoryMb(), SkippedSteps = skippedTotal, ElapsedSeconds = Elapsed(), Time = DateTimeOffset.UtcNow,
                };
                Record(record);
                var eta = TimeSpan.FromSeconds(recentStep.TotalSeconds * (totalSteps - step));
                if (progress.Enabled) progress.Draw(step, totalSteps, result.Loss, lr, tokensPerSecond, eta, mfu);
                else if (logTimer.Elapsed.TotalSeconds >= 10 || step == totalSteps || step - lastLoggedStep >= 100 || step <= 1)
                {
                    _log.Information("Step {Step}/{Total} loss {Loss:F4} lr {Lr:E2} grad-norm {GradNorm:F3} {TokensPerSecond:F0} tok/s MFU {Mfu} mem {Mem:F0} MiB ETA {Eta}",
                        step, totalSteps, result.Loss, lr, result.GradNorm, tokensPerSecond, mfu is { } m ? $"{m * 100:F1}%" : "n/a", record.MemoryMb, ProgressLine.Format(eta));
                    logTimer.Restart();
                    lastLoggedStep = step;
                }
            }
            _options.AfterStep?.Invoke(step);

            if (c.Eval.Interval > 0 && step % c.Eval.Interval == 0 && step < totalSteps) Evaluate();
            if (step % c.Checkpoint.Interval == 0 && step < totalSteps) Save("interval");
        }
        Evaluate();
        return Finish(TrainEnd.Completed, "final", $"finished {step} steps ({tokens:N0} tokens)");
    }

    // Stop reasons travel between ranks as numbers (a max-reduction); the larger code wins when ranks got different signals.
    static double SignalCode(string? reason) => reason switch
    {
        null => 0,
        "SIGTERM" => 4,
        "SIGUSR1" => 3,
        "SIGINT" => 2,
        _ => 1, // a request from inside the process (tests, library callers)
    };

    static string SignalName(int code, string? local) =>
        local != null && SignalCode(local) == code ? local : code switch { 4 => "SIGTERM", 3 => "SIGUSR1", 2 => "SIGINT", _ => "stop" };

    static Dictionary<string, double> ReadFirstEval(string metricsPath)
    {
        var first = new Dictionary<string, double>();
        if (!File.Exists(metricsPath)) return first;
        foreach (var r in MetricsLog.Read(metricsPath))
            if (r is { Kind: "eval", Domain: { } d, Loss: { } l }) first.TryAdd(d, l);
        return first;
    }
}

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

    public TrainOutcome Run() => RunStart.RunWithFallback(RunOnce);

    /// <summary>One attempt of <see cref="Run"/>; null when the checkpoint it resumed from failed its checksum while loading (added to <paramref name="attempts"/>' rejected set).</summary>
    TrainOutcome? RunOnce(RunAttempts attempts)
    {
        var c = _config;
        var world = _options.World ?? TrainingWorld.Single();
        var device = TrainingWorld.ResolveDevice(c.Device, world.Environment);
        var dtype = ModelFactory.ComputeDtype(c.Precision);
        // A rank started with other overrides would train something else while exchanging gradients with the rest.
        world.RequireSame("the resolved recipe", ConfigLoader.ToJson(c));

        // ---- where to start
        var start = RunStart.Open(c.RunDir, c.Threads, c.Seed, world, new RunControls
        {
            Log = _log, Resume = _options.Resume, TimeLimit = _options.TimeLimit, Signals = _options.Signals, Progress = _options.Progress, AfterStep = _options.AfterStep,
        }, attempts, filesVerifiedWhileLoading: world.IsDistributed
            // Each rank checks its own slice files as the sharded engine loads them (when saved on as many ranks).
            ? ShardedCheckpoint.FilesVerifiedWhileLoading(world.Size, ShardingStrategies.Parse(c.Parallel.Strategy))
            : OptimizerCheckpoint.FilesVerifiedWhileLoading);
        var (resumeFrom, state) = (start.ResumeFrom, start.State);
        if (state != null && state.Precision != c.Precision)
            _log.Warning("Checkpoint was trained in {Old}, continuing in {New}", state.Precision, c.Precision);

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
        if (resumeFrom != null)
        {
            if (!start.TryLoadState(engine, attempts.Rejected)) return null;
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
        DevicePeak? peak = null;
        if (c.MeasurePeak && world.IsRoot)
        {
            double measured = Throughput.MeasurePeakFlops(device, dtype);
            _log.Information("Measured device peak: {Peak:F1} GFLOP/s ({Dtype} matmul)", measured / 1e9, dtype);
            peak = new DevicePeak(measured, () => Throughput.MeasurePeakFlops(device, dtype), (before, again) =>
                _log.Information("Training ran faster than the measured device peak ({Before:F1} GFLOP/s; the machine was busy then): measured again, {Again:F1} GFLOP/s",
                    before / 1e9, again / 1e9));
        }

        // ---- data
        using var source = _options.Data.OpenTraining(c.SeqLen, c.Seed, state?.Sampler);
        var evalSets = _options.Data.OpenEvalSets(c.SeqLen);
        if (world.IsRoot) AtomicFile.WriteAllText(Path.Combine(c.RunDir, "train_config.json"), ConfigLoader.ToJson(c));

        // ---- the loop
        return new TrainLoop(start, new LoopSettings
        {
            RunDir = c.RunDir, MicroBatch = c.MicroBatch, SeqLen = c.SeqLen, GradAccum = accum, TotalSteps = totalSteps, MaxBadSteps = c.MaxBadSteps,
            LogInterval = c.LogInterval, EvalInterval = c.Eval.Interval, CheckpointInterval = c.Checkpoint.Interval, KeepLast = c.Checkpoint.KeepLast,
            SaveFinal = c.Checkpoint.SaveFinal, Precision = c.Precision, Tensorboard = c.Tensorboard,
        }, new LoopParts
        {
            Engine = engine, Source = source, Schedule = schedule, Device = device,
            TokensOf = _ => tokensPerStep, ProcessedTokensPerStep = tokensPerStep,
            Evaluate = evalSets.Count == 0 || c.Eval.Batches == 0 ? null : () => Evaluate(model, engine, evalSets, world),
            WriteRunFiles = tmp =>
            {
                File.WriteAllText(Path.Combine(tmp, CheckpointFiles.Config), ConfigLoader.ToJson(c));
                File.WriteAllText(Path.Combine(tmp, CheckpointFiles.ModelConfig), mc.ToHfJson("float32"));
            },
            Mfu = peak is null ? null : tokensPerSecond => peak.Mfu(tokensPerSecond * flopsPerToken / world.Size),
        }).Run();
    }

    /// <summary>Held-out loss of every eval set, reduced over ranks.</summary>
    IReadOnlyList<EvalResult> Evaluate(LlamaForCausalLM model, ITrainStep engine, IReadOnlyList<IEvalSet> evalSets, TrainingWorld world)
    {
        var c = _config;
        var results = new List<EvalResult>();
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
            results.Add(new EvalResult(set.Name, sums));
        }
        model.train();
        return results;
    }

}

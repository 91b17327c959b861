using MeLlama.Distributed;
using MeLlama.Model;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Optim;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Engine.Sharded;

/// <summary>
/// FSDP-style step: a 70B model's fp32 weights, gradients and Adam state (~1.1 TB) only fit when they are split
/// across ranks, and TorchSharp has no torch.distributed, so the splitting is done here over <see cref="ICollectives"/>.
/// <para>The model is cut into units (embedding, each decoder block, final norm + head), each a flat fp32 buffer
/// (<see cref="FlatParameterUnit"/>). With tied embeddings (<c>TieWordEmbeddings</c>, no <c>lm_head</c>) the shared
/// weight lives only in the embedding unit and the head unit holds just the final norm; see <see cref="Tied"/>. Forward runs without autograd keeping only each unit's input; backward walks
/// the units in reverse, recomputing each with autograd and back-propagating the incoming gradient with
/// <c>torch.autograd.backward(outputs, grad_outputs)</c>, so only one unit's full-size gradients exist at a time
/// and they are reduced into the owner's slice right away. The loss is the token-summed cross-entropy divided by
/// the global token count, so the summed gradient equals the single-process one on the concatenated global batch;
/// the gradient norm (clipping, non-finite check) is reduced across ranks.</para>
/// <para>Strategies trade memory for communication: <see cref="ShardingStrategy.FullShard"/> (ZeRO-3) gathers each
/// unit's parameters every time it is used; <see cref="ShardingStrategy.ShardGradOp"/> (ZeRO-2) gathers once per
/// step after the update and keeps them, still reduce-scattering gradients and sharding Adam state;
/// <see cref="ShardingStrategy.NoShard"/> keeps everything on every rank and all-reduces the gradients once per step.</para>
/// <para>Full-size parameter memory: by default the module keeps its full-size parameter tensors as gather
/// targets (what is 1/N per rank is the fp32 master, gradients and Adam state). With <c>freeAfterUse</c> (full shard
/// only) the parameters are re-pointed with <c>Tensor.set_</c> at views of the gathered buffer while a unit runs
/// and at an empty tensor afterwards, so between uses a rank holds no full-size parameter storage (peak: one
/// gathered unit at a time); see <see cref="ParameterStorage"/>.</para>
/// <para>Mixed precision: the model's parameters are the compute copies (fp32, or bf16 for bf16 recipes); masters,
/// gradient slices and Adam moments are fp32 (<see cref="FlatParameterUnit"/>): gathers move the compute dtype,
/// reduce-scatters fp32. The loss is taken on fp32 logits, as in <see cref="SingleProcessTrainStep"/>.</para>
/// <para>Start-up without a full model: built on the meta device (shapes only) with a compute device and an
/// <see cref="IMasterSource"/> (<see cref="MasterSources.RandomInit"/> replays the single-process init exactly;
/// <see cref="MasterSources.FromCheckpoint"/> reads only this rank's byte ranges of an HF checkpoint), a rank never
/// holds more than its slices plus one full-size parameter (random init) while the engine is built.</para>
/// <para>Prefetch (full shard + freeAfterUse, on by default there): every collective of a step goes through one
/// <see cref="CommWorker"/> thread in the order the compute thread queues them, which is program order and so the
/// same on every rank. Before a unit computes, the next unit's all-gather is queued (forward: the next block;
/// backward: the previous one), and a unit's reduce-scatter is queued instead of awaited, so communication runs
/// while the unit computes. At most two gathered units exist at once (the one computing and the one being
/// gathered), plus the flat gradient of at most one reduce-scatter in flight. A failed collective faults the
/// worker and its exception (for a dead peer, the <c>CollectiveException</c> naming the rank) is rethrown by
/// <see cref="Step"/>; the engine is unusable afterwards, as the communicator is.</para>
/// </summary>
public sealed class FsdpTrainStep : ITrainStep
{
    readonly LlamaForCausalLM _model;
    readonly ICollectives _comm;
    readonly TrainStepOptions _options;
    readonly IBatchLabels _labels;
    readonly FlatParameterUnit _embedding;
    readonly FlatParameterUnit[] _layers;
    readonly FlatParameterUnit _head;
    /// <summary>The communication thread when prefetching; null: collectives run synchronously on the caller's thread.</summary>
    readonly CommWorker? _worker;
    /// <summary>libtorch's multi-tensor AdamW, used off the CPU (or when the options ask for it); null: separate ops.</summary>
    readonly TorchFusedAdamW? _fusedAdamW;
    /// <summary>The all-gather queued for the unit that is used next (prefetch only).</summary>
    FlatParameterUnit.PendingGather? _ahead;

    /// <param name="freeAfterUse">Full shard only: release each unit's full-size parameter storage after every use.</param>
    /// <param name="prefetch">Overlap the next unit's all-gather (and this unit's reduce-scatter) with this unit's
    /// compute on a communication thread. Needs full shard with freeAfterUse; null means on exactly there.</param>
    /// <param name="masters">Where the fp32 master weights come from (each rank reads only its slices). Null: from the
    /// model's parameters, which is exact for an fp32 model; a bf16 model's values are already rounded, so pass the
    /// full-precision source here or call <see cref="LoadMasterWeights"/>. A model on the meta device without a
    /// source starts from zero masters: only for a resume, whose <see cref="LoadState"/> fills them.</param>
    /// <param name="device">The compute device when <paramref name="model"/> was built on the meta device (shapes
    /// only); otherwise ignored (the model's device is used).</param>
    /// <param name="labels">How micro-batch rows become inputs, labels and a target count: null means pretraining rows
    /// (<see cref="NextTokenLabels"/>, every position a target); fine-tuning passes rows with a loss mask, and the loss is
    /// then the summed NLL of the labelled positions over the global number of labelled positions.</param>
    public FsdpTrainStep(LlamaForCausalLM model, ICollectives comm, TrainStepOptions options,
        ShardingStrategy strategy = ShardingStrategy.FullShard, bool freeAfterUse = false, bool? prefetch = null,
        IMasterSource? masters = null, Device? device = null, IBatchLabels? labels = null)
    {
        _labels = labels ?? NextTokenLabels.Instance;
        bool canPrefetch = strategy == ShardingStrategy.FullShard && freeAfterUse;
        if (prefetch == true && !canPrefetch) throw new ArgumentException("prefetch needs the full-shard strategy with freeAfterUse", nameof(prefetch));
        _model = model;
        Tied = model.LmHead is null;
        _comm = comm;
        _options = options;
        Strategy = strategy;
        _model.train();
        var shapes = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);
        if (model.Device.type == DeviceType.META)
        {
            // Placeholders hold no values to start the masters from: zero until LoadState (a resume) fills them.
            masters ??= MasterSources.None;
            var target = device ?? throw new ArgumentException("a model on the meta device needs the compute device", nameof(device));
            if (target.type == DeviceType.META) throw new ArgumentException("the compute device cannot be meta", nameof(device));
            // Real tensors replace the shape-only ones: empty placeholders that gathers re-point (freeAfterUse), or
            // full-size compute buffers the first gather fills. Nothing full-size is initialised here.
            model.ReplaceParameters((name, p) => new Parameter(
                freeAfterUse ? empty(0, p.dtype, target) : empty(p.shape, p.dtype, target), requires_grad: p.requires_grad));
        }
        var computeDevice = model.Device;
        var all = model.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        var used = new HashSet<string>();
        FlatParameterUnit Unit(string name, Func<string, bool> match)
        {
            var list = all.Where(p => match(p.name)).Select(p => (p.name, p.parameter, shapes[p.name])).ToList();
            foreach (var (n, _, _) in list) used.Add(n);
            return new FlatParameterUnit(name, list, comm, computeDevice, strategy, freeAfterUse, masters);
        }
        _embedding = Unit("embedding", n => n.StartsWith("model.embed_tokens.", StringComparison.Ordinal));
        _layers = Enumerable.Range(0, model.Layers.Count)
            .Select(i => Unit($"layer{i}", n => n.StartsWith($"model.layers.{i}.", StringComparison.Ordinal)))
            .ToArray();
        _head = Unit("head", n => n.StartsWith("model.norm.", StringComparison.Ordinal) || n.StartsWith("lm_head.", StringComparison.Ordinal));
        var missed = all.Select(p => p.name).Where(n => !used.Contains(n)).ToList();
        if (missed.Count > 0) throw new NotSupportedException("parameters outside the FSDP units: " + string.Join(", ", missed));
        if (strategy == ShardingStrategy.NoShard)
            foreach (var u in Units) comm.Broadcast(u.Master, root: 0); // rank 0's initial weights are everyone's, as in DDP
        if (strategy != ShardingStrategy.FullShard)
            foreach (var u in Units) u.Gather();
        // After every check that can throw (the compiled kernel is not freed by TorchSharp's Dispose; see TorchFusedAdamW).
        bool fused = options.Kernel == AdamWKernel.TorchFused || (options.Kernel == AdamWKernel.Auto && computeDevice.type != DeviceType.CPU);
        _fusedAdamW = fused ? TorchFusedAdamW.TryCreate() : null;
        // Started last: the constructor's own collectives above ran on this thread with no worker to race.
        if (prefetch ?? canPrefetch) _worker = new CommWorker($"fsdp-comm-rank-{comm.Rank}", CudaThreadDevice.BinderFor(computeDevice));
    }

    /// <summary>
    /// Replaces the fp32 master weights with full-precision values from <paramref name="masters"/> (each rank reads its
    /// slices): a bf16 model built full-size holds bf16-rounded weights, which must not become the masters. The
    /// equivalent of <see cref="SingleProcessTrainStep.LoadMasterWeights"/>. Every rank calls it (no-shard broadcasts
    /// rank 0's); call it before the first step.
    /// </summary>
    public void LoadMasterWeights(IMasterSource masters)
    {
        foreach (var u in Units) u.FillMaster(masters);
        if (Strategy == ShardingStrategy.NoShard)
            foreach (var u in Units) _comm.Broadcast(u.Master, root: 0);
        if (!GatherPerUse)
            foreach (var u in Units) u.Gather();
    }

    /// <summary>True when all-gathers are prefetched and collectives run on the communication thread.</summary>
    public bool Prefetch => _worker is not null;

    /// <summary>
    /// Test probe: called with (unit, true) once a unit's parameters are gathered and (unit, false) just before
    /// they are released, on the compute thread; the span between is the unit's compute.
    /// </summary>
    internal Action<FlatParameterUnit, bool>? UnitInUse { get; set; }

    /// <summary>The unit whose all-gather is queued ahead (prefetch), if any: with the gathered ones, what holds full-size buffers.</summary>
    internal FlatParameterUnit? PrefetchedUnit => _ahead?.Unit;

    public ShardingStrategy Strategy { get; }

    /// <summary>
    /// The output head is the embedding weight (no <c>lm_head</c>): the weight has one home, the embedding unit, which
    /// is used twice per micro-batch (lookup at the start of forward, logits at the end; in backward the logits first,
    /// the lookup last). Under full shard that unit is gathered once per micro-batch and kept until the lookup's
    /// backward is done (torch FSDP likewise keeps its root unit, which holds shared weights, gathered between forward
    /// and backward), so both uses see the same gathered tensor, autograd sums the two gradient contributions into its
    /// one <c>.grad</c>, and that sum is reduce-scattered once per micro-batch like any unit's gradient. Cost: the
    /// embedding's compute copy stays alive for the micro-batch, and its full-size gradient from the head's backward
    /// until the lookup's backward (the planner counts both).
    /// </summary>
    public bool Tied { get; }

    /// <summary>Full shard with tied embeddings: the embedding unit stays gathered from the start of forward to the end of backward.</summary>
    bool KeepEmbedding => Tied && GatherPerUse;
    public IReadOnlyList<FlatParameterUnit> Units => [_embedding, .. _layers, _head];
    public long OptimizerSteps { get; private set; }

    /// <summary>Bytes of master weights, gradients and AdamW moments this rank holds (1/N of the model's with sharding).</summary>
    public long ShardedStateBytes => Units.Sum(u => u.OwnedStateBytes);

    /// <summary>Bytes of full-size parameter storage the model's parameters currently point at.</summary>
    public long ParameterStorageBytes => Units.Sum(u => u.ParameterStorageBytes);

    bool GatherPerUse => Strategy == ShardingStrategy.FullShard;

    public StepResult Step(IReadOnlyList<Tensor> microBatches, double lr)
    {
        if (microBatches.Count == 0) throw new ArgumentException("no micro-batches", nameof(microBatches));
        return Guarded(() => StepCore(microBatches, lr));
    }

    /// <summary>
    /// Runs <paramref name="body"/>; if it throws while collectives are queued, the worker is faulted so queued
    /// ones are dropped rather than run (the step is lost and the engine unusable, as after any collective failure).
    /// The prefetched buffer is left to the worker's completion and the finalizer: it may still be being written.
    /// </summary>
    T Guarded<T>(Func<T> body)
    {
        try { return body(); }
        catch (Exception e) when (_worker is not null)
        {
            _worker.Fault(e);
            _ahead = null;
            throw;
        }
    }

    StepResult StepCore(IReadOnlyList<Tensor> microBatches, double lr)
    {
        foreach (var u in Units) u.Grad.zero_();
        // Targets are counted on the rows as given (host memory in the trainer), before they move to the device.
        long localTokens = microBatches.Sum(b => _labels.CountTargets(b));
        double globalTokens = AllReduceSum(localTokens);
        // Nothing to learn anywhere (e.g. every row of a fine-tuning step is prompt): every rank sees the same sum, so
        // all skip together before any gather is queued, as the one-process engine skips.
        if (globalTokens == 0) return new StepResult(double.NaN, 0, Skipped: true, 0);
        double lossSum = 0;
        foreach (var batch in microBatches)
        {
            using var scope = NewDisposeScope();
            var (inputs, labels) = _labels.Split(batch.to(_model.Device));
            lossSum += ForwardBackward(inputs, labels, globalTokens);
        }
        _worker?.Drain(); // the queued reduce-scatters have landed in Grad before anything reads it
        foreach (var u in Units) u.AllReduceGradients();
        double meanLoss = AllReduceSum(lossSum) / globalTokens;
        long tokens = (long)globalTokens;
        if (!double.IsFinite(meanLoss)) return new StepResult(meanLoss, double.NaN, Skipped: true, tokens);
        double localSquares;
        using (NewDisposeScope())
            localSquares = stack(Units.Select(u => u.GradSquares()).ToArray()).sum().item<double>(); // one device sync, not one per unit
        double norm = Math.Sqrt(Strategy == ShardingStrategy.NoShard
            ? localSquares // every rank holds the whole (already summed) gradient
            : AllReduceSum(localSquares));
        if (!double.IsFinite(norm)) return new StepResult(meanLoss, norm, Skipped: true, tokens);
        double clip = _options.GradClip > 0 && norm > _options.GradClip ? _options.GradClip / (norm + 1e-6) : 1.0;
        OptimizerSteps++;
        foreach (var u in Units) u.AdamW(lr, _options.Beta1, _options.Beta2, _options.Eps, _options.WeightDecay, OptimizerSteps, clip, _fusedAdamW);
        if (!GatherPerUse)
            foreach (var u in Units) u.Gather(); // ZeRO-2 / no-shard: the updated parameters, once per step
        return new StepResult(meanLoss, norm, Skipped: false, tokens);
    }

    double AllReduceSum(double value)
    {
        using var t = tensor(new[] { value }, ScalarType.Float64, device: _model.Device);
        // Through the worker when there is one, behind whatever is queued, so that one thread issues every collective.
        if (_worker is null) _comm.AllReduce(t, ReduceOp.Sum);
        else _worker.Run("all_reduce", () => _comm.AllReduce(t, ReduceOp.Sum));
        return t.item<double>();
    }

    /// <summary>
    /// Gathers <paramref name="unit"/> (full shard) before it computes. With prefetch, its gather was normally queued
    /// by the previous use; <paramref name="next"/>'s gather is queued now, before waiting on this one, so the
    /// worker starts it as soon as this one is in and it runs while this unit computes.
    /// </summary>
    void Use(FlatParameterUnit unit, FlatParameterUnit? next)
    {
        if (!GatherPerUse) return;
        if (_worker is null) unit.Gather();
        else
        {
            var pending = _ahead;
            if (pending is not null && pending.Unit != unit)
                throw new InvalidOperationException($"prefetched {pending.Unit.Name} but {unit.Name} is used next");
            pending ??= unit.StartGather(_worker);
            _ahead = next?.StartGather(_worker);
            unit.FinishGather(pending);
        }
        UnitInUse?.Invoke(unit, true);
    }

    void Done(FlatParameterUnit unit)
    {
        if (!GatherPerUse) return;
        UnitInUse?.Invoke(unit, false);
        unit.Release();
    }

    /// <summary>Moves the unit's parameter gradients into its slice: queued behind the prefetched gather with prefetch.</summary>
    void Reduce(FlatParameterUnit unit)
    {
        if (_worker is null) unit.ReduceGradients();
        else _ = unit.ReduceGradientsAsync(_worker); // awaited by the Drain at the end of the step (or by any later Wait: FIFO)
    }

    /// <summary>One micro-batch; returns its summed token NLL (this rank).</summary>
    double ForwardBackward(Tensor inputs, Tensor labels, double globalTokens)
    {
        var layers = _model.Layers;
        var rope = _model.Rotary.Tables(0, inputs.shape[1], _model.Device, _model.Dtype);
        var layerInputs = new Tensor[layers.Count + 1];
        using (no_grad())
        {
            // Units are used in the order embedding, layer0 … layerN-1, head, layerN-1 … layer0, embedding;
            // each Use names the unit after it, whose gather is prefetched. Tied under full shard, the embedding is
            // gathered once here and held to the end, so it is never anyone's "next" again.
            Use(_embedding, _layers.Length > 0 ? _layers[0] : _head);
            layerInputs[0] = _model.Embedding.forward(inputs);
            if (!KeepEmbedding) Done(_embedding); // tied: the head's logits and both backwards use it again

            for (int i = 0; i < layers.Count; i++)
            {
                Use(_layers[i], i + 1 < _layers.Length ? _layers[i + 1] : _head);
                layerInputs[i + 1] = layers[i].forward(layerInputs[i], rope);
                Done(_layers[i]);
            }
        }
        Use(_head, _layers.Length > 0 ? _layers[^1] : KeepEmbedding ? null : _embedding);
        var top = layerInputs[^1].detach().requires_grad_(true);
        // fp32 softmax whatever the compute dtype, as the single-process engine does.
        var logits = _model.Logits(_model.FinalNorm.forward(top)).to(ScalarType.Float32);
        var nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), labels.reshape(-1),
            ignore_index: IBatchLabels.IgnoreIndex, reduction: nn.Reduction.Sum);
        (nll / globalTokens).backward();
        var grad = top.grad ?? throw new InvalidOperationException("no gradient reached the last hidden state");
        Reduce(_head);
        Done(_head);
        for (int i = layers.Count - 1; i >= 0; i--)
        {
            using var layerScope = NewDisposeScope();
            Use(_layers[i], i > 0 ? _layers[i - 1] : KeepEmbedding ? null : _embedding);
            var x = layerInputs[i].detach().requires_grad_(true);
            var y = layers[i].forward(x, rope);
            autograd.backward([y], [grad]);
            grad = (x.grad ?? throw new InvalidOperationException($"no gradient reached layer {i}'s input")).detach().MoveToOuterDisposeScope();
            Reduce(_layers[i]);
            Done(_layers[i]);
        }
        if (!KeepEmbedding) Use(_embedding, null);
        // Tied: the weight's .grad already holds the head's contribution; the lookup's is added to it, and the sum is
        // reduce-scattered once.
        autograd.backward([_model.Embedding.forward(inputs)], [grad]);
        Reduce(_embedding);
        Done(_embedding);
        return nll.item<float>();
    }

    /// <summary>Held-out loss of this rank's batch (not reduced across ranks; every rank must call it).</summary>
    public EvalSums Evaluate(Tensor batch) => Guarded(() => EvaluateCore(batch));

    EvalSums EvaluateCore(Tensor batch)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (inputs, labels) = _labels.Split(batch.to(_model.Device));
        long t = inputs.shape[1];
        var rope = _model.Rotary.Tables(0, t, _model.Device, _model.Dtype);
        Use(_embedding, _layers.Length > 0 ? _layers[0] : _head);
        var h = _model.Embedding.forward(inputs);
        if (!KeepEmbedding) Done(_embedding);
        for (int i = 0; i < _layers.Length; i++)
        {
            Use(_layers[i], i + 1 < _layers.Length ? _layers[i + 1] : _head);
            h = _model.Layers[i].forward(h, rope);
            Done(_layers[i]);
        }
        Use(_head, null);
        var logits = _model.Logits(_model.FinalNorm.forward(h)).to(ScalarType.Float32);
        Done(_head);
        if (KeepEmbedding) Done(_embedding);
        var sum = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), labels.reshape(-1),
            ignore_index: IBatchLabels.IgnoreIndex, reduction: nn.Reduction.None).to(ScalarType.Float64).sum();
        return new EvalSums(sum.item<double>(), _labels.CountTargets(batch));
    }

    /// <summary>
    /// Sharded save (see <see cref="ShardedCheckpoint"/>): every rank calls it with the same folder; each writes
    /// its slice files, rank 0 also <c>sharding.json</c>. Returns on every rank once all files are in place.
    /// </summary>
    public void SaveState(string checkpointDir)
    {
        ShardedCheckpoint.Save(checkpointDir, Units, _comm.Rank, _comm.WorldSize, Strategy);
        _comm.Barrier();
    }

    /// <summary>
    /// Loads a sharded checkpoint saved with any world size and strategy, re-slicing it for this rank. Where the ranks
    /// check their own slice files as they read them (<see cref="ShardedCheckpoint.FilesVerifiedWhileLoading"/>), a
    /// mismatch on any rank throws <see cref="CheckpointCorruptException"/> on every rank, so all of them fall back to
    /// an older checkpoint together instead of one rank leaving the job.
    /// </summary>
    public void LoadState(string checkpointDir, long optimizerSteps)
    {
        // Every rank reaches the agreement whatever happened locally (0 loaded, 1 corrupt, 2 any other failure), so a
        // rank that failed never leaves the others waiting in a collective until the timeout.
        Exception? failure = null;
        try { ShardedCheckpoint.Load(checkpointDir, Units, _comm.Rank, _comm.WorldSize); }
        catch (Exception e) { failure = e; }
        float outcome;
        using (var flag = torch.tensor(new[] { failure is null ? 0f : failure is CheckpointCorruptException ? 1f : 2f }, device: Units[0].Master.device))
        {
            _comm.AllReduce(flag, ReduceOp.Max);
            outcome = flag.item<float>();
        }
        // Only when the worst outcome is "corrupt" do all ranks fall back together; any other failure fails every rank.
        if (failure is not null && (outcome > 1f) == failure is not CheckpointCorruptException)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
        if (outcome > 1f) throw new IOException($"checkpoint {Path.GetFileName(checkpointDir.TrimEnd('/'))} failed to load on another rank (its log names the cause)", failure);
        if (outcome == 1f) throw new CheckpointCorruptException(checkpointDir, "a slice file failed its checksum on another rank");
        OptimizerSteps = optimizerSteps;
        foreach (var u in Units)
        {
            u.Grad.zero_();
            if (!GatherPerUse) u.Gather();
        }
    }

    public void Dispose()
    {
        if (_worker is not null)
        {
            // Queued collectives are dropped; one in flight ends within the communicator's timeout. If it somehow
            // does not, the units' tensors are left to the finalizer rather than freed under the worker's feet.
            var limit = _comm.Timeout > TimeSpan.Zero ? _comm.Timeout + TimeSpan.FromSeconds(5) : TimeSpan.FromSeconds(30);
            if (!_worker.Shutdown(limit)) return;
        }
        foreach (var u in Units) u.Dispose();
        _fusedAdamW?.Dispose();
    }
}

using MeLlama.Distributed;
using MeLlama.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Engine.Sharded;

/// <summary>
/// FSDP-style (ZeRO-3 "full shard") step. Units: the embedding, each decoder block, final norm + output head.
/// Each rank holds 1/N of every unit's fp32 master weights, gradients and AdamW moments (<see cref="FlatParameterUnit"/>).
/// Forward (no autograd) gathers one unit at a time and keeps only each unit's input; backward walks the units in
/// reverse, gathering again, recomputing the unit with autograd (activation checkpointing at unit granularity),
/// back-propagating the incoming gradient with <c>torch.autograd.backward(outputs, grad_outputs)</c> and
/// reduce-scattering the unit's gradients (fp32 sum) into the local slice. The loss is the token-summed
/// cross-entropy divided by the global token count, so the summed gradient equals the single-process one
/// on the concatenated global batch. Gradient norm (for clipping and the non-finite check) is reduced across ranks.
/// <para>Limitation: TorchSharp 0.107 exposes no <c>Tensor.set_</c>, so the module keeps full-size compute
/// parameter tensors that <see cref="FlatParameterUnit.Gather"/> overwrites; what is sharded (1/N per rank) is the
/// fp32 master copy, the gradients and the optimizer state. Full-size gradients live only while one unit's backward runs.</para>
/// </summary>
public sealed class FsdpTrainStep : ITrainStep
{
    readonly LlamaForCausalLM _model;
    readonly ICollectives _comm;
    readonly TrainStepOptions _options;
    readonly FlatParameterUnit _embedding;
    readonly FlatParameterUnit[] _layers;
    readonly FlatParameterUnit _head;

    public FsdpTrainStep(LlamaForCausalLM model, ICollectives comm, TrainStepOptions options)
    {
        if (model.LmHead is null) throw new NotSupportedException("the sharded engine needs an untied output head (TieWordEmbeddings = false)");
        _model = model;
        _comm = comm;
        _options = options;
        _model.train();
        var all = model.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        var used = new HashSet<string>();
        List<(string, Parameter)> Take(Func<string, bool> match)
        {
            var list = all.Where(p => match(p.name)).Select(p => (p.name, p.parameter)).ToList();
            foreach (var (n, _) in list) used.Add(n);
            return list;
        }
        _embedding = new FlatParameterUnit("embedding", Take(n => n.StartsWith("model.embed_tokens.", StringComparison.Ordinal)), comm);
        _layers = Enumerable.Range(0, model.Layers.Count)
            .Select(i => new FlatParameterUnit($"layer{i}", Take(n => n.StartsWith($"model.layers.{i}.", StringComparison.Ordinal)), comm))
            .ToArray();
        _head = new FlatParameterUnit("head", Take(n => n.StartsWith("model.norm.", StringComparison.Ordinal) || n.StartsWith("lm_head.", StringComparison.Ordinal)), comm);
        var missed = all.Select(p => p.name).Where(n => !used.Contains(n)).ToList();
        if (missed.Count > 0) throw new NotSupportedException("parameters outside the FSDP units: " + string.Join(", ", missed));
    }

    public IReadOnlyList<FlatParameterUnit> Units => [_embedding, .. _layers, _head];
    public long OptimizerSteps { get; private set; }

    /// <summary>Bytes of sharded master weights, gradients and AdamW moments this rank holds.</summary>
    public long ShardedStateBytes => Units.Sum(u => u.ShardedStateBytes);

    public StepResult Step(IReadOnlyList<Tensor> microBatches, double lr)
    {
        if (microBatches.Count == 0) throw new ArgumentException("no micro-batches", nameof(microBatches));
        foreach (var u in Units) u.Grad.zero_();
        long localTokens = microBatches.Sum(b => b.shape[0] * (b.shape[1] - 1));
        double globalTokens = AllReduceSum(localTokens);
        double lossSum = 0;
        foreach (var batch in microBatches)
        {
            using var scope = NewDisposeScope();
            var ids = batch.to(_model.Device);
            long t = ids.shape[1] - 1;
            lossSum += ForwardBackward(ids.narrow(1, 0, t), ids.narrow(1, 1, t), globalTokens);
        }
        double meanLoss = AllReduceSum(lossSum) / globalTokens;
        long tokens = (long)globalTokens;
        if (!double.IsFinite(meanLoss)) return new StepResult(meanLoss, double.NaN, Skipped: true, tokens);
        double norm = Math.Sqrt(AllReduceSum(Units.Sum(u => u.LocalGradSquares())));
        if (!double.IsFinite(norm)) return new StepResult(meanLoss, norm, Skipped: true, tokens);
        if (_options.GradClip > 0 && norm > _options.GradClip)
            foreach (var u in Units) u.Grad.mul_(_options.GradClip / (norm + 1e-6));
        OptimizerSteps++;
        foreach (var u in Units) u.AdamW(lr, _options.Beta1, _options.Beta2, _options.Eps, _options.WeightDecay, OptimizerSteps);
        return new StepResult(meanLoss, norm, Skipped: false, tokens);
    }

    double AllReduceSum(double value)
    {
        using var t = tensor(new[] { value }, ScalarType.Float64);
        _comm.AllReduce(t, ReduceOp.Sum);
        return t.item<double>();
    }

    /// <summary>One micro-batch; returns its summed token NLL (this rank).</summary>
    double ForwardBackward(Tensor inputs, Tensor labels, double globalTokens)
    {
        var layers = _model.Layers;
        var rope = _model.Rotary.Tables(0, inputs.shape[1], _model.Device, _model.Dtype);
        var layerInputs = new Tensor[layers.Count + 1];
        using (no_grad())
        {
            _embedding.Gather();
            layerInputs[0] = _model.Embedding.forward(inputs);
            for (int i = 0; i < layers.Count; i++)
            {
                _layers[i].Gather();
                layerInputs[i + 1] = layers[i].forward(layerInputs[i], rope);
            }
        }
        _head.Gather();
        var top = layerInputs[^1].detach().requires_grad_(true);
        var logits = _model.Logits(_model.FinalNorm.forward(top));
        var nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), labels.reshape(-1), reduction: nn.Reduction.Sum);
        (nll / globalTokens).backward();
        var grad = top.grad ?? throw new InvalidOperationException("no gradient reached the last hidden state");
        FinishUnit(_head, _model.FinalNorm, _model.LmHead!);
        for (int i = layers.Count - 1; i >= 0; i--)
        {
            using var layerScope = NewDisposeScope();
            _layers[i].Gather();
            var x = layerInputs[i].detach().requires_grad_(true);
            var y = layers[i].forward(x, rope);
            autograd.backward([y], [grad]);
            grad = (x.grad ?? throw new InvalidOperationException($"no gradient reached layer {i}'s input")).detach().MoveToOuterDisposeScope();
            FinishUnit(_layers[i], layers[i]);
        }
        _embedding.Gather();
        autograd.backward([_model.Embedding.forward(inputs)], [grad]);
        FinishUnit(_embedding, _model.Embedding);
        return nll.item<float>();
    }

    static void FinishUnit(FlatParameterUnit unit, params nn.Module[] modules)
    {
        unit.ReduceScatterGradients();
        foreach (var m in modules) m.zero_grad(set_to_none: true);
    }

    /// <summary>Held-out loss of this rank's batch (not reduced across ranks; every rank must call it).</summary>
    public EvalSums Evaluate(Tensor batch)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var ids = batch.to(_model.Device);
        long t = ids.shape[1] - 1;
        var inputs = ids.narrow(1, 0, t);
        var rope = _model.Rotary.Tables(0, t, _model.Device, _model.Dtype);
        _embedding.Gather();
        var h = _model.Embedding.forward(inputs);
        for (int i = 0; i < _layers.Length; i++)
        {
            _layers[i].Gather();
            h = _model.Layers[i].forward(h, rope);
        }
        _head.Gather();
        var logits = _model.Logits(_model.FinalNorm.forward(h)).to(ScalarType.Float32);
        var labels = ids.narrow(1, 1, t);
        var sum = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), labels.reshape(-1), reduction: nn.Reduction.None)
            .to(ScalarType.Float64).sum();
        return new EvalSums(sum.item<double>(), labels.numel());
    }

    public void SaveState(string checkpointDir) =>
        throw new NotSupportedException("sharded checkpoints are not implemented yet for the FSDP engine");

    public void LoadState(string checkpointDir, long optimizerSteps) =>
        throw new NotSupportedException("sharded checkpoints are not implemented yet for the FSDP engine");

    public void Dispose()
    {
        foreach (var u in Units) u.Dispose();
    }
}

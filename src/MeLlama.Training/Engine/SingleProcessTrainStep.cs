using MeLlama.Model;
using MeLlama.Training.Optim;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Engine;

/// <summary>Options of a training step. <paramref name="Kernel"/>: how AdamW runs (Auto picks per device; tests force one).</summary>
public sealed record TrainStepOptions(double Beta1, double Beta2, double Eps, double WeightDecay, double GradClip, bool ActivationCheckpointing,
    AdamWKernel Kernel = AdamWKernel.Auto);

/// <summary>
/// Forward, loss, backward, accumulation and AdamW on one device. The model holds compute weights (fp32 or bf16);
/// <see cref="MasterAdamW"/> holds the fp32 master weights and moments. With activation checkpointing, the decoder
/// layers run without autograd in forward, keeping only each layer's input; backward then walks the layers in
/// reverse, recomputing one layer with autograd and back-propagating the incoming gradient through it with
/// <c>torch.autograd.backward(outputs, grad_outputs)</c> (peak activation memory: one layer instead of all).
/// </summary>
public sealed class SingleProcessTrainStep : ITrainStep
{
    readonly LlamaForCausalLM _model;
    readonly MasterAdamW _optimizer;
    readonly TrainStepOptions _options;

    public SingleProcessTrainStep(LlamaForCausalLM model, TrainStepOptions options)
    {
        _model = model;
        _options = options;
        _model.train();
        _optimizer = new MasterAdamW(model.named_parameters().Select(p => (p.name, p.parameter)), options.Beta1, options.Beta2, options.Eps, options.WeightDecay, options.Kernel);
    }

    public LlamaForCausalLM Model => _model;
    public long OptimizerSteps => _optimizer.StepCount;

    /// <summary>AdamW moments (<c>exp_avg.NAME</c>, <c>exp_avg_sq.NAME</c>), e.g. to measure optimizer memory.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> OptimizerStateTensors() => _optimizer.StateTensors();

    public StepResult Step(IReadOnlyList<Tensor> microBatches, double lr)
    {
        if (microBatches.Count == 0) throw new ArgumentException("no micro-batches", nameof(microBatches));
        _optimizer.ZeroGrad();
        double lossSum = 0;
        long tokens = 0;
        foreach (var batch in microBatches)
        {
            using var scope = NewDisposeScope();
            var ids = batch.to(_model.Device);
            long t = ids.shape[1] - 1;
            var inputs = ids.narrow(1, 0, t);
            var labels = ids.narrow(1, 1, t);
            double loss = _options.ActivationCheckpointing
                ? ForwardBackwardCheckpointed(inputs, labels, microBatches.Count)
                : ForwardBackward(inputs, labels, microBatches.Count);
            _optimizer.AccumulateMicroBatchGradients();
            lossSum += loss;
            tokens += labels.numel();
        }
        double meanLoss = lossSum / microBatches.Count;
        if (!double.IsFinite(meanLoss))
        {
            _optimizer.ZeroGrad();
            return new StepResult(meanLoss, double.NaN, Skipped: true, tokens);
        }
        double norm = _optimizer.GradNorm();
        if (!double.IsFinite(norm))
        {
            _optimizer.ZeroGrad();
            return new StepResult(meanLoss, norm, Skipped: true, tokens);
        }
        // Clipping is folded into the update (one pass over the gradients fewer than ScaleGrads + Step).
        double clip = _options.GradClip > 0 && norm > _options.GradClip ? _options.GradClip / (norm + 1e-6) : 1.0;
        _optimizer.Step(lr, gradScale: clip);
        return new StepResult(meanLoss, norm, Skipped: false, tokens);
    }

    /// <summary>Mean cross-entropy (fp32 softmax) of logits [B,T,V] against labels [B,T].</summary>
    static Tensor CrossEntropy(Tensor logits, Tensor labels) =>
        nn.functional.cross_entropy(logits.to(ScalarType.Float32).reshape(-1, logits.shape[^1]), labels.reshape(-1));

    double ForwardBackward(Tensor inputs, Tensor labels, int microBatches)
    {
        var loss = CrossEntropy(_model.forward(inputs), labels);
        (loss / microBatches).backward();
        return loss.item<float>();
    }

    double ForwardBackwardCheckpointed(Tensor inputs, Tensor labels, int microBatches)
    {
        var layers = _model.Layers;
        var layerInputs = new Tensor[layers.Count + 1];
        var rope = _model.Rotary.Tables(0, inputs.shape[1], _model.Device, _model.Dtype);
        using (no_grad())
        {
            layerInputs[0] = _model.Embedding.forward(inputs);
            for (int i = 0; i < layers.Count; i++) layerInputs[i + 1] = layers[i].forward(layerInputs[i], rope);
        }
        // Head and loss with autograd from the last hidden state, then layer by layer back to the embedding.
        var top = layerInputs[^1].detach().requires_grad_(true);
        var loss = CrossEntropy(_model.Logits(_model.FinalNorm.forward(top)), labels);
        (loss / microBatches).backward();
        var grad = top.grad ?? throw new InvalidOperationException("no gradient reached the last hidden state");
        for (int i = layers.Count - 1; i >= 0; i--)
        {
            using var layerScope = NewDisposeScope();
            var x = layerInputs[i].detach().requires_grad_(true);
            var y = layers[i].forward(x, rope);
            autograd.backward([y], [grad]);
            grad = (x.grad ?? throw new InvalidOperationException($"no gradient reached layer {i}'s input")).detach().MoveToOuterDisposeScope();
        }
        var embedded = _model.Embedding.forward(inputs);
        autograd.backward([embedded], [grad]);
        return loss.item<float>();
    }

    /// <summary>Replaces the fp32 master weights with full-precision values (bf16 runs; see <see cref="MasterAdamW.LoadMasterWeights"/>).</summary>
    public void LoadMasterWeights(Func<string, Tensor> readMaster) => _optimizer.LoadMasterWeights(readMaster);

    public EvalSums Evaluate(Tensor batch)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var ids = batch.to(_model.Device);
        long t = ids.shape[1] - 1;
        var logits = _model.forward(ids.narrow(1, 0, t)).to(ScalarType.Float32);
        var labels = ids.narrow(1, 1, t);
        var sum = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), labels.reshape(-1), reduction: nn.Reduction.None)
            .to(ScalarType.Float64).sum();
        return new EvalSums(sum.item<double>(), labels.numel());
    }

    public void SaveState(string checkpointDir) => _optimizer.SaveTo(checkpointDir);

    public void LoadState(string checkpointDir, long optimizerSteps) => _optimizer.LoadFrom(checkpointDir, optimizerSteps);

    public void Dispose() => _optimizer.Dispose();
}

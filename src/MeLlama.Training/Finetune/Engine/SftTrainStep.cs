using MeLlama.Distributed;
using MeLlama.Model;
using MeLlama.Training.Engine;
using MeLlama.Training.Finetune.Data;
using MeLlama.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Finetune.Engine;

/// <summary>
/// The trainer's <see cref="ITrainStep"/> contract for supervised fine-tuning: micro-batches are <see cref="SftRows"/>
/// (loss mask folded into the ids) and the loss is the mean cross-entropy over target (assistant) tokens only, exactly
/// averaged over the whole step (each micro-batch's sum is divided by the step's total target count, so short and long
/// replies weigh per token). The optimizer (<see cref="MasterAdamW"/>) covers the parameters that require gradients:
/// the adapters under LoRA, everything under full fine-tuning; checkpoints hold those (fp32) and their moments.
/// <para>Data parallel (<c>dataParallel</c> given, LoRA over several ranks): every rank holds the whole model and identical
/// trainable weights (rank 0's, broadcast at construction), runs its block of the global batch, divides its NLL sums by the
/// GLOBAL target count (summed over ranks first), and the gradients are summed over ranks before the norm and the update,
/// so N ranks compute exactly the one-process step and stay identical. Only rank 0 writes checkpoint files.</para>
/// </summary>
public sealed class SftTrainStep : ITrainStep
{
    readonly LlamaForCausalLM _model;
    readonly MasterAdamW _optimizer;
    readonly TrainStepOptions _options;
    readonly ICollectives? _dataParallel;

    /// <param name="dataParallel">The ranks to train with as data parallelism (null or one rank: one process).</param>
    public SftTrainStep(LlamaForCausalLM model, TrainStepOptions options, ICollectives? dataParallel = null)
    {
        if (options.ActivationCheckpointing) throw new NotSupportedException("activation checkpointing is not implemented for fine-tuning yet");
        _model = model;
        _options = options;
        _dataParallel = dataParallel is { WorldSize: > 1 } ? dataParallel : null;
        _model.train();
        if (_dataParallel != null) BroadcastTrainable(_dataParallel);
        _optimizer = new MasterAdamW(model.named_parameters().Select(p => (p.name, p.parameter)), options.Beta1, options.Beta2, options.Eps, options.WeightDecay, options.Kernel);
        if (!_optimizer.ParameterNames.Any()) throw new InvalidOperationException("no parameter requires gradients: nothing to train");
    }

    public long OptimizerSteps => _optimizer.StepCount;
    /// <summary>Names of the parameters the optimizer updates.</summary>
    public IEnumerable<string> TrainedParameterNames => _optimizer.ParameterNames;

    public StepResult Step(IReadOnlyList<Tensor> microBatches, double lr)
    {
        if (microBatches.Count == 0) throw new ArgumentException("no micro-batches", nameof(microBatches));
        _optimizer.ZeroGrad();
        long targets = 0;
        foreach (var batch in microBatches)
        {
            using var scope = NewDisposeScope();
            targets += batch.narrow(1, 1, batch.shape[1] - 1).ge(0).sum().item<long>();
        }
        if (_dataParallel != null) targets = AllReduce(_dataParallel, targets);
        if (targets == 0) return new StepResult(double.NaN, 0, Skipped: true, 0);
        double nllSum = 0;
        foreach (var batch in microBatches)
        {
            using var scope = NewDisposeScope();
            var (inputs, labels) = SftRows.Split(batch.to(_model.Device));
            var sum = SumNll(_model.forward(inputs), labels);
            (sum / targets).backward();
            _optimizer.AccumulateMicroBatchGradients();
            nllSum += sum.item<float>();
        }
        if (_dataParallel != null)
        {
            _optimizer.AllReduceGradients(_dataParallel, _model.Device);
            nllSum = AllReduce(_dataParallel, nllSum);
        }
        double meanLoss = nllSum / targets;
        if (!double.IsFinite(meanLoss))
        {
            _optimizer.ZeroGrad();
            return new StepResult(meanLoss, double.NaN, Skipped: true, targets);
        }
        double norm = _optimizer.GradNorm();
        if (!double.IsFinite(norm))
        {
            _optimizer.ZeroGrad();
            return new StepResult(meanLoss, norm, Skipped: true, targets);
        }
        // Clipping folded into the update (as SingleProcessTrainStep does): no pass over the gradients to scale them.
        double clip = _options.GradClip > 0 && norm > _options.GradClip ? _options.GradClip / (norm + 1e-6) : 1.0;
        _optimizer.Step(lr, gradScale: clip);
        return new StepResult(meanLoss, norm, Skipped: false, targets);
    }

    /// <summary>Rank 0's trainable weights on every rank (the seeded adapter init should agree already; this makes it so).</summary>
    void BroadcastTrainable(ICollectives comm)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var p in _model.parameters().Where(p => p.requires_grad))
        {
            var buffer = p.detach().to(ScalarType.Float32).contiguous().clone();
            comm.Broadcast(buffer, root: 0);
            p.copy_(buffer);
        }
    }

    // On the model's device: the NCCL backend reduces CUDA tensors only, the TCP one CPU tensors.
    long AllReduce(ICollectives comm, long value)
    {
        using var scope = NewDisposeScope();
        var t = tensor(new[] { value }, ScalarType.Int64).to(_model.Device);
        comm.AllReduce(t, ReduceOp.Sum);
        return t.item<long>();
    }

    double AllReduce(ICollectives comm, double value)
    {
        using var scope = NewDisposeScope();
        var t = tensor(new[] { value }, ScalarType.Float64).to(_model.Device);
        comm.AllReduce(t, ReduceOp.Sum);
        return t.item<double>();
    }

    /// <summary>Sum of token NLLs (fp32 softmax) over labelled positions of logits [B,T,V] against labels [B,T].</summary>
    public static Tensor SumNll(Tensor logits, Tensor labels) =>
        nn.functional.cross_entropy(logits.to(ScalarType.Float32).reshape(-1, logits.shape[^1]), labels.reshape(-1),
            ignore_index: SftRows.IgnoreIndex, reduction: nn.Reduction.Sum);

    public EvalSums Evaluate(Tensor batch)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        bool wasTraining = _model.training;
        _model.eval();
        try
        {
            var (inputs, labels) = SftRows.Split(batch.to(_model.Device));
            var sum = SumNll(_model.forward(inputs), labels);
            return new EvalSums(sum.item<float>(), labels.ge(0).sum().item<long>());
        }
        finally
        {
            if (wasTraining) _model.train();
        }
    }

    /// <summary>Writes the trained weights and moments; under data parallelism rank 0 alone (the ranks hold the same state).</summary>
    public void SaveState(string checkpointDir)
    {
        if (_dataParallel is null || _dataParallel.Rank == 0) _optimizer.SaveTo(checkpointDir);
    }

    public void LoadState(string checkpointDir, long optimizerSteps) => _optimizer.LoadFrom(checkpointDir, optimizerSteps);

    public void Dispose() => _optimizer.Dispose();
}

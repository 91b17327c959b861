using static TorchSharp.torch;

namespace MeLlama.Training.Engine;

/// <summary>Outcome of one optimizer step.</summary>
/// <param name="Loss">Mean next-token cross-entropy over every token of the (global) batch; NaN/∞ when it was not finite.</param>
/// <param name="GradNorm">Global L2 norm of the gradient before clipping.</param>
/// <param name="Skipped">True when the loss or a gradient was not finite: no update was applied.</param>
/// <param name="Tokens">Predicted tokens in the global batch.</param>
public sealed record StepResult(double Loss, double GradNorm, bool Skipped, long Tokens);

/// <summary>Held-out loss over some batches: sum of token NLLs and the token count.</summary>
public readonly record struct EvalSums(double SumNll, long Tokens)
{
    public double MeanLoss => Tokens == 0 ? double.NaN : SumNll / Tokens;
    public static EvalSums operator +(EvalSums a, EvalSums b) => new(a.SumNll + b.SumNll, a.Tokens + b.Tokens);
}

/// <summary>
/// The seam between the training loop and how a step is executed: forward, loss, backward, gradient
/// accumulation, clipping and the optimizer update, plus the model/optimizer state that lives with it.
/// <see cref="SingleProcessTrainStep"/> runs on one device; a sharded (FSDP) engine implements the same contract,
/// each rank passing its own micro-batches and the engine reducing across ranks.
/// </summary>
public interface ITrainStep : IDisposable
{
    /// <summary>
    /// One optimizer step over this rank's micro-batches, each [microBatch, seqLen + 1] int64 token ids (inputs are
    /// [:, :-1], labels [:, 1:]). Applies the update with learning rate <paramref name="lr"/> unless the loss or the
    /// gradient norm is not finite, in which case the gradients are dropped and <see cref="StepResult.Skipped"/> is set.
    /// </summary>
    StepResult Step(IReadOnlyList<Tensor> microBatches, double lr);

    /// <summary>Held-out loss of one batch [b, seqLen + 1] (no gradients, no state change).</summary>
    EvalSums Evaluate(Tensor batch);

    /// <summary>Optimizer updates applied so far.</summary>
    long OptimizerSteps { get; }

    /// <summary>Writes model weights (fp32 master, HF names) and optimizer state into a checkpoint folder.</summary>
    void SaveState(string checkpointDir);

    /// <summary>Restores what <see cref="SaveState"/> wrote.</summary>
    void LoadState(string checkpointDir, long optimizerSteps);
}

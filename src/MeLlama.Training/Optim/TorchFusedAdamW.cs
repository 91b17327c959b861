using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Optim;

/// <summary>
/// AdamW through libtorch's own multi-tensor kernel, <c>torch._fused_adamw_</c> (what
/// <c>torch.optim.AdamW(fused=True)</c> runs): one pass over master weight, gradient and both moments for a whole
/// list of tensors, instead of the ~10 passes of separate torch ops. On a GPU that is the difference between the
/// update being memory-bound once or ten times (the 13B-layer bf16 step on an H200 spent 36 ms in the op-by-op
/// update, 16 ms in this one: README.md, "Side by side with PyTorch"). TorchSharp binds neither this op nor the <c>_foreach_</c> family, so it is
/// reached through a TorchScript function compiled once per instance (no process-wide state).
/// Same formulas as <see cref="MasterAdamW"/>'s other paths (decoupled decay, bias-corrected moments); the gradient
/// scale folds clipping in: the kernel divides each gradient by <c>grad_scale</c> and writes the result back, so
/// after <see cref="Step"/> the gradients hold the scaled values.
/// TorchSharp's <c>CompilationUnit.Dispose</c> does not free the native unit (0.107), so each instance leaks one small
/// compiled function; engines create one each.
/// </summary>
public sealed class TorchFusedAdamW : IDisposable
{
    const string Script = """
        def adamw(masters: List[Tensor], grads: List[Tensor], exp_avgs: List[Tensor], exp_avg_sqs: List[Tensor],
                  steps: List[Tensor], lr: float, beta1: float, beta2: float, weight_decay: float, eps: float,
                  grad_scale: Optional[Tensor]) -> Tensor:
            no_max: List[Tensor] = []
            torch._fused_adamw_(masters, grads, exp_avgs, exp_avg_sqs, no_max, steps, lr=lr, beta1=beta1, beta2=beta2,
                                weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False,
                                grad_scale=grad_scale, found_inf=None)
            return steps[0]

        """;

    readonly jit.CompilationUnit _unit;

    TorchFusedAdamW(jit.CompilationUnit unit) => _unit = unit;

    /// <summary>The fused kernel, or null when this libtorch lacks it (then the caller uses separate torch ops).</summary>
    public static TorchFusedAdamW? TryCreate()
    {
        try { return new TorchFusedAdamW(jit.compile(Script)); }
        catch (Exception e) when (e is ExternalException or NotImplementedException) { return null; }
    }

    /// <summary>One update of every tensor in the lists (all on one device, fp32), at optimizer step <paramref name="step"/> (1-based).</summary>
    public void Step(IReadOnlyList<Tensor> masters, IReadOnlyList<Tensor> grads, IReadOnlyList<Tensor> expAvgs, IReadOnlyList<Tensor> expAvgSqs,
        double lr, double beta1, double beta2, double eps, double weightDecay, long step, double gradScale)
    {
        if (masters.Count == 0) return;
        using var scope = NewDisposeScope();
        var device = masters[0].device;
        // The kernel reads the step from a tensor on the device (torch keeps one per parameter); one shared tensor,
        // read-only here, serves the whole list.
        var stepTensor = full(1, (float)step, ScalarType.Float32, device);
        var steps = Enumerable.Repeat(stepTensor, masters.Count).ToArray();
        Tensor? scale = gradScale == 1.0 ? null : full(1, (float)(1.0 / gradScale), ScalarType.Float32, device);
        // Scalars made and kept alive here: TorchSharp converts a boxed double into a temporary Scalar and hands the
        // native side only its pointer, which is read later in the call; a GC in between would free it.
        using Scalar lrS = lr, beta1S = beta1, beta2S = beta2, decayS = weightDecay, epsS = eps;
        var result = _unit.invoke("adamw", masters.ToArray(), grads.ToArray(), expAvgs.ToArray(), expAvgSqs.ToArray(), steps,
            lrS, beta1S, beta2S, decayS, epsS, scale!);
        GC.KeepAlive(lrS); GC.KeepAlive(beta1S); GC.KeepAlive(beta2S); GC.KeepAlive(decayS); GC.KeepAlive(epsS);
        (result as IDisposable)?.Dispose();
    }

    public void Dispose() => _unit.Dispose();
}

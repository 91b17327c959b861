using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Optim;

/// <summary>How <see cref="MasterAdamW"/> computes the update and the gradient norm.</summary>
public enum AdamWKernel
{
    /// <summary>
    /// <see cref="CpuSimd"/> when every parameter's master and moments are fp32 contiguous CPU tensors, else
    /// <see cref="TorchFused"/> where libtorch has it, else <see cref="TorchOps"/> (one choice for the whole optimizer).
    /// </summary>
    Auto,
    /// <summary>Our single-pass SIMD loops (<see cref="CpuFusedKernels"/>); fp32 contiguous CPU tensors only.</summary>
    CpuSimd,
    /// <summary>libtorch's multi-tensor <c>_fused_adamw_</c> (<see cref="TorchFusedAdamW"/>), any device.</summary>
    TorchFused,
    /// <summary>Separate torch ops per tensor (the reference formulation).</summary>
    TorchOps,
}

/// <summary>
/// AdamW (decoupled weight decay, as torch.optim.AdamW) over fp32 master weights. With fp32 training the master
/// weight is the parameter itself and gradients accumulate in <c>param.grad</c>. With bf16 training the model
/// holds bf16 copies for compute; each micro-batch's bf16 gradient is added into an fp32 accumulator, the update
/// runs in fp32 and the result is cast back into the bf16 parameter (the Megatron "main_grad" scheme: TorchSharp
/// has no autocast, so this is done by hand). Optimizer state (exp_avg, exp_avg_sq) is always fp32.
/// Weight decay applies to matrices only, not to norm gains (1-D tensors), as in HF/Megatron recipes.
/// </summary>
public sealed class MasterAdamW : IDisposable
{
    sealed class Slot(string name, Parameter param, Tensor master, Tensor? gradAccumulator, Tensor expAvg, Tensor expAvgSq, bool decay)
    {
        /// <summary>Whether <see cref="GradAccumulator"/> holds a gradient since the last zero_grad (if not, its contents are stale).</summary>
        public bool Accumulated { get; set; }
        public string Name { get; } = name;
        public Parameter Param { get; } = param;
        public Tensor Master { get; } = master;
        /// <summary>fp32 gradient sum when the parameter is not fp32; null when param.grad is used directly.</summary>
        public Tensor? GradAccumulator { get; } = gradAccumulator;
        public Tensor ExpAvg { get; } = expAvg;
        public Tensor ExpAvgSq { get; } = expAvgSq;
        public bool Decay { get; } = decay;
        public Tensor? Grad => GradAccumulator is null ? Param.grad : Accumulated ? GradAccumulator : null;
    }

    readonly List<Slot> _slots = [];
    readonly AdamWKernel _kernel;
    readonly TorchFusedAdamW? _fused;

    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Eps { get; }
    public double WeightDecay { get; }
    /// <summary>Updates applied so far (the bias-correction step t).</summary>
    public long StepCount { get; set; }

    public MasterAdamW(IEnumerable<(string Name, Parameter Param)> parameters, double beta1, double beta2, double eps, double weightDecay,
        AdamWKernel kernel = AdamWKernel.Auto)
    {
        Beta1 = beta1; Beta2 = beta2; Eps = eps; WeightDecay = weightDecay;
        using (no_grad())
        {
            foreach (var (name, p) in parameters)
            {
                if (!p.requires_grad) continue;
                bool fp32 = p.dtype == ScalarType.Float32;
                Tensor master = fp32 ? p : p.detach().to(ScalarType.Float32).clone();
                // Not zeroed: the first micro-batch of each step copies into it (Accumulated says when it holds data).
                Tensor? acc = fp32 ? null : empty_like(master);
                _slots.Add(new Slot(name, p, master, acc, zeros_like(master), zeros_like(master), decay: p.dim() >= 2));
            }
        }
        if (kernel == AdamWKernel.Auto)
            kernel = _slots.All(s => CpuFusedKernels.Supports(s.Master, s.ExpAvg, s.ExpAvgSq)) ? AdamWKernel.CpuSimd : AdamWKernel.TorchFused;
        if (kernel == AdamWKernel.CpuSimd && !_slots.All(s => CpuFusedKernels.Supports(s.Master, s.ExpAvg, s.ExpAvgSq)))
            throw new ArgumentException("AdamWKernel.CpuSimd needs fp32 contiguous CPU tensors", nameof(kernel));
        if (kernel == AdamWKernel.TorchFused)
        {
            _fused = TorchFusedAdamW.TryCreate();
            if (_fused is null) kernel = AdamWKernel.TorchOps;
        }
        _kernel = kernel;
    }

    /// <summary>The kernel in use (Auto resolved).</summary>
    public AdamWKernel Kernel => _kernel;

    public IEnumerable<string> ParameterNames => _slots.Select(s => s.Name);

    /// <summary>fp32 weights by parameter name (the parameters themselves when training in fp32).</summary>
    public IEnumerable<(string Name, Tensor Tensor)> MasterWeights() => _slots.Select(s => (s.Name, s.Master));

    /// <summary>Call after each micro-batch's backward: moves non-fp32 gradients into the fp32 accumulators.</summary>
    public void AccumulateMicroBatchGradients()
    {
        using var _ = no_grad();
        foreach (var s in _slots)
        {
            if (s.GradAccumulator is null || s.Param.grad is not { } g) continue;
            // The first micro-batch converts into the accumulator (one pass, no zeroing before); later ones add in
            // place with type promotion (no fp32 temporary). The bf16 gradient is dropped, not zeroed: the next
            // backward hands over a fresh one.
            if (s.Accumulated) s.GradAccumulator.add_(g);
            else s.GradAccumulator.copy_(g);
            s.Accumulated = true;
            s.Param.grad = null;
        }
    }

    public void ZeroGrad()
    {
        using var _ = no_grad();
        foreach (var s in _slots)
        {
            // Dropped rather than zeroed (torch's zero_grad(set_to_none=True)): backward then hands its fresh
            // gradient over instead of adding it into a zeroed one, saving two passes over every gradient.
            if (s.Param.grad is not null) s.Param.grad = null;
            s.Accumulated = false;
        }
    }

    /// <summary>
    /// Data parallelism: replaces every accumulated gradient by its sum over the ranks of <paramref name="comm"/>, in one
    /// all-reduce of a flat fp32 buffer on <paramref name="device"/> (a parameter without a gradient on this rank counts
    /// as zeros and has one afterwards, so every rank ends with the same gradients and the same later norm and update).
    /// </summary>
    public void AllReduceGradients(MeLlama.Distributed.ICollectives comm, Device device)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long total = _slots.Sum(s => s.Master.numel());
        var flat = zeros(total, ScalarType.Float32, device);
        long offset = 0;
        foreach (var s in _slots)
        {
            long n = s.Master.numel();
            if (s.Grad is { } g) flat.narrow(0, offset, n).copy_(g.reshape(-1));
            offset += n;
        }
        comm.AllReduce(flat, MeLlama.Distributed.ReduceOp.Sum);
        offset = 0;
        foreach (var s in _slots)
        {
            long n = s.Master.numel();
            var summed = flat.narrow(0, offset, n).view(s.Master.shape);
            if (s.GradAccumulator is { } acc)
            {
                acc.copy_(summed);
                s.Accumulated = true;
            }
            else if (s.Param.grad is { } g) g.copy_(summed);
            else s.Param.grad = summed.clone(); // the parameter keeps its own reference to the native tensor
            offset += n;
        }
    }

    /// <summary>L2 norm of all accumulated gradients (NaN or ∞ when any gradient is not finite).</summary>
    public double GradNorm()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var grads = _slots.Select(s => s.Grad).OfType<Tensor>().ToArray();
        if (grads.Length == 0) return 0;
        // CPU fp32: one float64-accumulating pass, no float64 copies of the gradients.
        if (_kernel == AdamWKernel.CpuSimd && grads.All(g => CpuFusedKernels.Supports(g))) return Math.Sqrt(grads.Sum(CpuFusedKernels.SumOfSquares));
        // Elsewhere one fp32 norm per tensor (a single read, as torch's clip_grad_norm_), combined in float64 with
        // one host sync. (Squaring in float64 first wrote and read a float64 copy of every gradient: 28 ms of a
        // 210 ms step for 1.6B parameters on an H200.)
        var norms = stack(grads.Select(g => g.norm()).ToArray()).to(ScalarType.Float64);
        return Math.Sqrt(norms.square().sum().item<double>());
    }

    /// <summary>Multiplies every gradient by <paramref name="factor"/> (clipping).</summary>
    public void ScaleGrads(double factor)
    {
        using var _ = no_grad();
        foreach (var s in _slots) s.Grad?.mul_(factor);
    }

    /// <summary>
    /// One AdamW update with learning rate <paramref name="lr"/> from the accumulated gradients, each multiplied by
    /// <paramref name="gradScale"/> first (gradient clipping folded into the update). The gradients are left unchanged
    /// by CpuSimd and TorchOps; TorchFused writes the scaled gradients back (libtorch's kernel does). A parameter with
    /// no gradient this step is not touched (no decay, no moment update), as in torch.optim.
    /// </summary>
    public void Step(double lr, double gradScale = 1.0)
    {
        using var _ = no_grad();
        StepCount++;
        if (_kernel == AdamWKernel.TorchFused)
        {
            FusedStep(lr, gradScale);
            return;
        }
        double bc1 = 1 - Math.Pow(Beta1, StepCount), bc2 = 1 - Math.Pow(Beta2, StepCount);
        foreach (var s in _slots)
        {
            if (s.Grad is not { } gradient) continue;
            using var scope = NewDisposeScope();
            if (_kernel == AdamWKernel.CpuSimd && CpuFusedKernels.Supports(s.Master, gradient, s.ExpAvg, s.ExpAvgSq))
            {
                // fp32 on CPU: the whole update in one pass over memory.
                CpuFusedKernels.AdamW(s.Master, gradient, s.ExpAvg, s.ExpAvgSq,
                    new CpuFusedKernels.AdamWScalars(lr, Beta1, Beta2, Eps, s.Decay ? WeightDecay : 0, bc1, bc2, gradScale));
                if (!ReferenceEquals(s.Master, s.Param)) s.Param.copy_(s.Master);
                continue;
            }
            var g = gradScale == 1.0 ? gradient : gradient.mul(gradScale);
            if (s.Decay && WeightDecay > 0) s.Master.mul_(1 - lr * WeightDecay);
            s.ExpAvg.mul_(Beta1).add_(g, alpha: 1 - Beta1);
            s.ExpAvgSq.mul_(Beta2).addcmul_(g, g, value: 1 - Beta2);
            var denom = s.ExpAvgSq.sqrt().div_(Math.Sqrt(bc2)).add_(Eps);
            s.Master.addcdiv_(s.ExpAvg, denom, value: -lr / bc1);
            if (!ReferenceEquals(s.Master, s.Param)) s.Param.copy_(s.Master);
        }
    }

    /// <summary>The update through <see cref="TorchFusedAdamW"/>: one kernel per (decay, device) group, then the compute copies.</summary>
    void FusedStep(double lr, double gradScale)
    {
        using var scope = NewDisposeScope();
        foreach (var group in _slots.Where(s => s.Grad is not null).GroupBy(s => (s.Decay, s.Master.device.ToString())))
        {
            var slots = group.ToList();
            _fused!.Step(slots.Select(s => s.Master).ToList(), slots.Select(s => s.Grad!).ToList(), slots.Select(s => s.ExpAvg).ToList(),
                slots.Select(s => s.ExpAvgSq).ToList(), lr, Beta1, Beta2, Eps, group.Key.Decay ? WeightDecay : 0, StepCount, gradScale);
        }
        foreach (var s in _slots)
            if (s.Grad is not null && !ReferenceEquals(s.Master, s.Param)) s.Param.copy_(s.Master);
    }

    /// <summary>Optimizer state tensors for a checkpoint: <c>exp_avg.NAME</c>, <c>exp_avg_sq.NAME</c>.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> StateTensors()
    {
        foreach (var s in _slots)
        {
            yield return ("exp_avg." + s.Name, s.ExpAvg);
            yield return ("exp_avg_sq." + s.Name, s.ExpAvgSq);
        }
    }

    /// <summary>
    /// Sets the fp32 master weights from full-precision sources (e.g. an fp16/fp32 HF checkpoint or the fp32 random
    /// init), so a bf16 run does not start from bf16-rounded masters. The model's copies are refreshed from them.
    /// </summary>
    public void LoadMasterWeights(Func<string, Tensor> readMaster)
    {
        using var _ = no_grad();
        foreach (var s in _slots)
        {
            using var scope = NewDisposeScope();
            CopyChecked(s.Master, readMaster(s.Name), s.Name);
            if (!ReferenceEquals(s.Master, s.Param)) s.Param.copy_(s.Master);
        }
    }

    /// <summary>
    /// Restores master weights (and the model's copies) and moments with readers that fill the given tensor in place
    /// (e.g. <c>SafeTensorsReader.ReadInto</c>, which checks the shape): no temporary tensor per state tensor and no
    /// second copy, which halves the memory traffic of a resume.
    /// </summary>
    public void LoadState(Action<string, Tensor> readMasterInto, Action<string, Tensor> readStateInto, long stepCount)
    {
        using var _ = no_grad();
        foreach (var s in _slots)
        {
            using var scope = NewDisposeScope();
            readMasterInto(s.Name, s.Master);
            if (!ReferenceEquals(s.Master, s.Param)) s.Param.copy_(s.Master);
            readStateInto("exp_avg." + s.Name, s.ExpAvg);
            readStateInto("exp_avg_sq." + s.Name, s.ExpAvgSq);
        }
        StepCount = stepCount;
    }

    /// <summary>
    /// After <see cref="MasterWeights"/> and <see cref="StateTensors"/> were filled in place by a reader that takes
    /// all of them at once (<c>SafeTensorsReader.ReadAllIntoHashing</c>): refreshes the model's lower-precision
    /// copies from the masters and sets the step count, as <see cref="LoadState"/> does.
    /// </summary>
    public void CompleteInPlaceLoad(long stepCount)
    {
        using var _ = no_grad();
        foreach (var s in _slots)
            if (!ReferenceEquals(s.Master, s.Param)) s.Param.copy_(s.Master);
        StepCount = stepCount;
    }

    static void CopyChecked(Tensor target, Tensor source, string name)
    {
        if (!target.shape.SequenceEqual(source.shape))
            throw new InvalidDataException($"checkpoint tensor {name} has shape [{string.Join(",", source.shape)}], model expects [{string.Join(",", target.shape)}]");
        target.copy_(source);
    }

    public void Dispose()
    {
        _fused?.Dispose();
        foreach (var s in _slots)
        {
            if (!ReferenceEquals(s.Master, s.Param)) s.Master.Dispose();
            s.GradAccumulator?.Dispose();
            s.ExpAvg.Dispose();
            s.ExpAvgSq.Dispose();
        }
        _slots.Clear();
    }
}

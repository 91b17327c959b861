using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Optim;

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
        public string Name { get; } = name;
        public Parameter Param { get; } = param;
        public Tensor Master { get; } = master;
        /// <summary>fp32 gradient sum when the parameter is not fp32; null when param.grad is used directly.</summary>
        public Tensor? GradAccumulator { get; } = gradAccumulator;
        public Tensor ExpAvg { get; } = expAvg;
        public Tensor ExpAvgSq { get; } = expAvgSq;
        public bool Decay { get; } = decay;
        public Tensor? Grad => GradAccumulator ?? Param.grad;
    }

    readonly List<Slot> _slots = [];

    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Eps { get; }
    public double WeightDecay { get; }
    /// <summary>Updates applied so far (the bias-correction step t).</summary>
    public long StepCount { get; set; }

    public MasterAdamW(IEnumerable<(string Name, Parameter Param)> parameters, double beta1, double beta2, double eps, double weightDecay)
    {
        Beta1 = beta1; Beta2 = beta2; Eps = eps; WeightDecay = weightDecay;
        using var _ = no_grad();
        foreach (var (name, p) in parameters)
        {
            if (!p.requires_grad) continue;
            bool fp32 = p.dtype == ScalarType.Float32;
            Tensor master = fp32 ? p : p.detach().to(ScalarType.Float32).clone();
            Tensor? acc = fp32 ? null : zeros_like(master);
            _slots.Add(new Slot(name, p, master, acc, zeros_like(master), zeros_like(master), decay: p.dim() >= 2));
        }
    }

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
            s.GradAccumulator.add_(g.to(ScalarType.Float32));
            g.zero_();
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
            s.GradAccumulator?.zero_();
        }
    }

    /// <summary>L2 norm of all accumulated gradients (NaN or ∞ when any gradient is not finite).</summary>
    public double GradNorm()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var grads = _slots.Select(s => s.Grad).OfType<Tensor>().ToArray();
        // CPU fp32: one float64-accumulating pass, no float64 copies of the gradients.
        if (grads.All(g => CpuFusedKernels.Supports(g))) return Math.Sqrt(grads.Sum(CpuFusedKernels.SumOfSquares));
        var squares = grads.Select(g => g.to(ScalarType.Float64).square().sum()).ToArray();
        if (squares.Length == 0) return 0;
        return Math.Sqrt(stack(squares).sum().item<double>());
    }

    /// <summary>Multiplies every gradient by <paramref name="factor"/> (clipping).</summary>
    public void ScaleGrads(double factor)
    {
        using var _ = no_grad();
        foreach (var s in _slots) s.Grad?.mul_(factor);
    }

    /// <summary>
    /// One AdamW update with learning rate <paramref name="lr"/> from the accumulated gradients, each multiplied by
    /// <paramref name="gradScale"/> first (gradient clipping folded into the update; the gradients are not changed).
    /// </summary>
    public void Step(double lr, double gradScale = 1.0)
    {
        using var _ = no_grad();
        StepCount++;
        double bc1 = 1 - Math.Pow(Beta1, StepCount), bc2 = 1 - Math.Pow(Beta2, StepCount);
        foreach (var s in _slots)
        {
            if (s.Grad is not { } gradient) continue;
            using var scope = NewDisposeScope();
            if (CpuFusedKernels.Supports(s.Master, gradient, s.ExpAvg, s.ExpAvgSq))
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

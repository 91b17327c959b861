using MeLlama.Distributed;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MeLlama.Training.Engine.Sharded;

/// <summary>
/// One FSDP unit (the embedding, one decoder block, or final norm + head): its parameters viewed as one flat
/// fp32 buffer padded to a multiple of the world size (<see cref="ShardLayout"/>). This rank owns the fp32 master
/// slice, the gradient slice and the AdamW moments of that slice only. The module's own parameter tensors are the
/// compute buffers: <see cref="Gather"/> fills them from every rank's slice before the unit runs.
/// </summary>
public sealed class FlatParameterUnit : IDisposable
{
    readonly record struct Segment(string Name, Parameter Param, long Offset, long Numel, bool Decay);

    readonly List<Segment> _segments = [];
    readonly ICollectives _comm;

    public string Name { get; }
    public ShardLayout Layout { get; }
    /// <summary>fp32 master weights of this rank's slice [ShardNumel] (padding elements stay zero).</summary>
    public Tensor Master { get; }
    /// <summary>Accumulated (reduce-scattered, summed over ranks) gradient of this rank's slice.</summary>
    public Tensor Grad { get; }
    public Tensor ExpAvg { get; }
    public Tensor ExpAvgSq { get; }

    public FlatParameterUnit(string name, IReadOnlyList<(string Name, Parameter Param)> parameters, ICollectives comm)
    {
        Name = name;
        _comm = comm;
        long offset = 0;
        foreach (var (n, p) in parameters)
        {
            if (p.dtype != ScalarType.Float32) throw new NotSupportedException($"the sharded engine trains fp32 parameters only; {n} is {p.dtype}");
            _segments.Add(new Segment(n, p, offset, p.numel(), Decay: p.dim() >= 2));
            offset += p.numel();
        }
        Layout = ShardLayout.For(offset, comm.WorldSize);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var flat = zeros(Layout.PaddedNumel);
        foreach (var s in _segments) flat.narrow(0, s.Offset, s.Numel).copy_(s.Param.reshape(-1));
        Master = flat.narrow(0, Layout.ShardOffset(comm.Rank), Layout.ShardNumel).clone().MoveToOuterDisposeScope();
        Grad = zeros(Layout.ShardNumel).MoveToOuterDisposeScope();
        ExpAvg = zeros(Layout.ShardNumel).MoveToOuterDisposeScope();
        ExpAvgSq = zeros(Layout.ShardNumel).MoveToOuterDisposeScope();
    }

    public IEnumerable<string> ParameterNames => _segments.Select(s => s.Name);

    /// <summary>Bytes of the sharded state this rank holds for the unit: master, gradient and two moments.</summary>
    public long ShardedStateBytes => 4 * Layout.ShardNumel * sizeof(float);

    /// <summary>All-gathers every rank's master slice into the module's parameters.</summary>
    public void Gather()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var full = empty(Layout.PaddedNumel);
        _comm.AllGather(Master, full);
        foreach (var s in _segments) s.Param.copy_(full.narrow(0, s.Offset, s.Numel).view(s.Param.shape));
    }

    /// <summary>
    /// Reduce-scatters (sum) the parameters' gradients of the last backward into this rank's gradient slice
    /// (accumulating across micro-batches) and drops the full-size gradients.
    /// </summary>
    public void ReduceScatterGradients()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var full = zeros(Layout.PaddedNumel);
        foreach (var s in _segments)
            if (s.Param.grad is { } g) full.narrow(0, s.Offset, s.Numel).copy_(g.reshape(-1));
        var mine = empty(Layout.ShardNumel);
        _comm.ReduceScatter(full, mine, ReduceOp.Sum);
        Grad.add_(mine);
    }

    /// <summary>Sum of squared gradient elements of this rank's slice (fp64).</summary>
    public double LocalGradSquares()
    {
        using var scope = NewDisposeScope();
        return Grad.to(ScalarType.Float64).square().sum().item<double>();
    }

    /// <summary>
    /// AdamW on the slice, with the same operations as <see cref="Optim.MasterAdamW.Step"/> element by element;
    /// weight decay only on the parts of the slice that belong to matrices.
    /// </summary>
    public void AdamW(double lr, double beta1, double beta2, double eps, double weightDecay, long step)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        double bc1 = 1 - Math.Pow(beta1, step), bc2 = 1 - Math.Pow(beta2, step);
        if (weightDecay > 0)
        {
            long lo = Layout.ShardOffset(_comm.Rank), hi = lo + Layout.ShardNumel;
            foreach (var s in _segments.Where(s => s.Decay))
            {
                long a = Math.Max(lo, s.Offset), b = Math.Min(hi, s.Offset + s.Numel);
                if (a < b) Master.narrow(0, a - lo, b - a).mul_(1 - lr * weightDecay);
            }
        }
        ExpAvg.mul_(beta1).add_(Grad, alpha: 1 - beta1);
        ExpAvgSq.mul_(beta2).addcmul_(Grad, Grad, value: 1 - beta2);
        var denom = ExpAvgSq.sqrt().div_(Math.Sqrt(bc2)).add_(eps);
        Master.addcdiv_(ExpAvg, denom, value: -lr / bc1);
    }

    public void Dispose()
    {
        Master.Dispose();
        Grad.Dispose();
        ExpAvg.Dispose();
        ExpAvgSq.Dispose();
    }
}
